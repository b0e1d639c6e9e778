//! Geolocation: where on Earth a client is.
//!
//! [`Locator`] turns a client IP into a position using a MaxMind-format City
//! database (GeoIP2/GeoLite2 City, DB-IP City Lite, or the flat
//! `latitude`/`longitude` layout of the ip-location-db packages);
//! [`Position::distance_km`] is the great-circle distance. The region choice
//! that uses them is the gateway's (`meridian_gateway::route::choose`), with
//! node load, health, room affinity and pinning.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// Mean Earth radius used for great-circle distances, in kilometres (IUGG).
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A position on Earth in decimal degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Latitude, -90..=90.
    pub latitude: f64,
    /// Longitude, -180..=180.
    pub longitude: f64,
}

impl Position {
    /// Great-circle distance to `other` in kilometres (haversine formula).
    pub fn distance_km(&self, other: &Position) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

/// Errors opening a geolocation database. All are the operator's (bad path or file).
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read or is not a MaxMind DB.
    #[error("cannot open geolocation database {path}: {source}")]
    Open {
        /// Path given.
        path: String,
        /// Reader error.
        source: maxminddb::MaxMindDbError,
    },
    /// The database has records, but none of the first ones has coordinates in
    /// either layout (`location.latitude` or top-level `latitude`): it is not a
    /// City database (e.g. a Country or ASN one).
    #[error(
        "geolocation database {path} ({database_type}) has no coordinates: \
         need a City database with location.latitude/longitude (MaxMind GeoIP2/GeoLite2 City, \
         DB-IP City Lite) or top-level latitude/longitude (ip-location-db)"
    )]
    NoCoordinates {
        /// Path given.
        path: String,
        /// The database's own `database_type` metadata.
        database_type: String,
    },
}

/// City record fields we read, in both layouts.
#[derive(Deserialize)]
struct CityRecord {
    location: Option<NestedLocation>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    country: Option<NestedCountry>,
    country_code: Option<String>,
}

#[derive(Deserialize)]
struct NestedLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct NestedCountry {
    iso_code: Option<String>,
}

impl CityRecord {
    fn located(self) -> Option<Located> {
        let accuracy_radius_km = self.location.as_ref().and_then(|l| l.accuracy_radius);
        let (latitude, longitude) = match &self.location {
            Some(NestedLocation { latitude: Some(la), longitude: Some(lo), .. }) => (*la, *lo),
            _ => (self.latitude?, self.longitude?),
        };
        Some(Located {
            position: Position { latitude, longitude },
            accuracy_radius_km,
            country: self.country.and_then(|c| c.iso_code).or(self.country_code),
        })
    }
}

/// Where a client address was placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// Latitude and longitude of the record.
    pub position: Position,
    /// The record's accuracy radius in km (GeoIP2 layout only).
    pub accuracy_radius_km: Option<u16>,
    /// ISO 3166-1 alpha-2 country code, when the record has one.
    pub country: Option<String>,
}

/// How many records [`Locator::open`] inspects for coordinates.
const LAYOUT_PROBE_RECORDS: usize = 64;

/// Looks up client positions. Without a database every lookup is `None`.
#[derive(Default)]
pub struct Locator {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

impl Locator {
    /// A locator that places nobody (every client goes to the default region).
    pub fn none() -> Self {
        Self { reader: None }
    }

    /// Opens a City database (read fully into memory) and checks that its records
    /// carry coordinates in one of the two layouts.
    ///
    /// Errors: [`GeoError::Open`] for an unreadable file, [`GeoError::NoCoordinates`]
    /// for a database of another kind.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let shown = path.display().to_string();
        let reader =
            maxminddb::Reader::open_readfile(path).map_err(|source| GeoError::Open { path: shown.clone(), source })?;
        let everything = if reader.metadata.ip_version == 6 {
            ipnetwork::IpNetwork::V6(ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::UNSPECIFIED, 0).map_err(|_| {
                GeoError::NoCoordinates { path: shown.clone(), database_type: reader.metadata.database_type.clone() }
            })?)
        } else {
            ipnetwork::IpNetwork::V4(ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 0).map_err(|_| {
                GeoError::NoCoordinates { path: shown.clone(), database_type: reader.metadata.database_type.clone() }
            })?)
        };
        let has_coordinates = reader
            .within::<CityRecord>(everything)
            .map_err(|source| GeoError::Open { path: shown.clone(), source })?
            .take(LAYOUT_PROBE_RECORDS)
            .filter_map(Result::ok)
            .any(|item| item.info.located().is_some());
        if !has_coordinates {
            return Err(GeoError::NoCoordinates { path: shown, database_type: reader.metadata.database_type.clone() });
        }
        Ok(Self { reader: Some(reader) })
    }

    /// Whether a database is loaded.
    pub fn has_database(&self) -> bool {
        self.reader.is_some()
    }

    /// Where `ip` is, or `None` for private, loopback, link-local and unknown
    /// addresses, and when no database is loaded.
    pub fn locate(&self, ip: IpAddr) -> Option<Located> {
        if !is_public(ip) {
            return None;
        }
        let record: CityRecord = self.reader.as_ref()?.lookup(ip).ok()??;
        record.located()
    }
}

/// Whether `ip` can be geolocated at all (not private, loopback, link-local,
/// unspecified, CGNAT or unique-local).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONDON: Position = Position { latitude: 51.51, longitude: -0.13 };
    const SEATTLE: Position = Position { latitude: 47.61, longitude: -122.33 };

    #[test]
    fn london_to_seattle_is_about_7700_km() {
        let d = LONDON.distance_km(&SEATTLE);
        assert!((7650.0..7750.0).contains(&d), "{d}");
    }

    #[test]
    fn private_and_loopback_addresses_are_not_located() {
        for ip in ["10.1.2.3", "127.0.0.1", "192.168.1.1", "100.64.0.1", "::1", "fd00::1", "fe80::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_public("81.2.69.142".parse().unwrap()));
        assert_eq!(Locator::none().locate("81.2.69.142".parse().unwrap()), None);
    }
}
