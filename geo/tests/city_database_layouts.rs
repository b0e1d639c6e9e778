//! The locator reads both City layouts (GeoIP2's nested `location`, and the flat
//! `latitude`/`longitude` of the ip-location-db packages), and refuses a database
//! with neither. The databases are written here with `mmdb-writer`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::IpNet;
use meridian_geo::{GeoError, Locator};
use serde::Serialize;

#[derive(Serialize)]
struct GeoIp2City {
    location: Location,
    country: Country,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct Country {
    iso_code: String,
}

#[derive(Serialize)]
struct FlatCity {
    latitude: f64,
    longitude: f64,
    country_code: String,
}

#[derive(Serialize)]
struct CountryOnly {
    country: Country,
    names: BTreeMap<String, String>,
}

fn write(name: &str, build: impl FnOnce(&mut mmdb_writer::Writer)) -> PathBuf {
    let mut w = mmdb_writer::Writer::new(name);
    build(&mut w);
    let path = std::env::temp_dir().join(format!("meridian-geo-{name}-{}.mmdb", std::process::id()));
    std::fs::write(&path, w.to_bytes().expect("mmdb bytes")).expect("write mmdb");
    path
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn geoip2_layout_gives_position_accuracy_and_country() {
    let path = write("GeoIP2-City", |w| {
        let london = GeoIp2City {
            location: Location { latitude: 51.5142, longitude: -0.0931, accuracy_radius: 20 },
            country: Country { iso_code: "GB".into() },
        };
        w.insert(net("81.2.69.0/24"), &london).unwrap();
    });
    let locator = Locator::open(&path).expect("a City database opens");
    let here = locator.locate("81.2.69.142".parse().unwrap()).expect("located");
    assert_eq!((here.position.latitude, here.position.longitude), (51.5142, -0.0931));
    assert_eq!((here.accuracy_radius_km, here.country.as_deref()), (Some(20), Some("GB")));
    assert_eq!(locator.locate("8.8.8.8".parse().unwrap()), None, "an address not in the database");
    assert_eq!(locator.locate("10.0.0.1".parse().unwrap()), None, "a private address");
    std::fs::remove_file(path).ok();
}

#[test]
fn flat_layout_is_read_too() {
    let path = write("ip-location-db", |w| {
        let seattle = FlatCity { latitude: 47.61, longitude: -122.33, country_code: "US".into() };
        w.insert(net("4.14.0.0/16"), &seattle).unwrap();
    });
    let here = Locator::open(&path).unwrap().locate("4.14.1.2".parse().unwrap()).expect("located");
    assert_eq!((here.position.latitude, here.country.as_deref()), (47.61, Some("US")));
    std::fs::remove_file(path).ok();
}

#[test]
fn a_database_without_coordinates_is_refused_with_a_clear_error() {
    let path = write("GeoIP2-Country", |w| {
        let gb = CountryOnly { country: Country { iso_code: "GB".into() }, names: BTreeMap::new() };
        w.insert(net("81.2.69.0/24"), &gb).unwrap();
    });
    match Locator::open(&path) {
        Err(e @ GeoError::NoCoordinates { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("GeoIP2-Country") && msg.contains("City"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a Country database must be refused"),
    }
    assert!(matches!(Locator::open(std::path::Path::new("/nonexistent.mmdb")), Err(GeoError::Open { .. })));
    std::fs::remove_file(path).ok();
}
