//! Where a join goes: the region table, and the choice of region and node for one
//! client, with the reasons. Pure: the caller passes the client's located
//! position and the room's placement from the store.
//!
//! Order of precedence:
//! 1. room affinity: a live room's later joiners go to the node hosting it (until
//!    rooms cascade across regions);
//! 2. the nearest region with a node, by great-circle distance;
//! 3. the default region, for clients that cannot be located.

use std::net::SocketAddr;

use meridian_geo::{Position, Region};
use serde::Serialize;

/// An SFU node the gateway can proxy signal sockets to.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTarget {
    /// Node id, as the SFU reports it in `ServerInfo.node_id`.
    pub id: String,
    /// Address of the node's signal listener (plain WebSocket, `/rtc`).
    pub signal_addr: SocketAddr,
}

/// A region with its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionTarget {
    /// The region's id and position.
    pub region: Region,
    /// Its SFU nodes; the first is used until load-aware choice lands.
    pub nodes: Vec<NodeTarget>,
}

/// Why a region and node were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The room is live on this node; joiners follow it.
    RoomAffinity,
    /// The client was located and this is the nearest region with a node.
    Nearest,
    /// The client could not be located (private, loopback or unknown address, or no
    /// database), so the default region was used.
    DefaultUnlocated,
}

/// One region as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Region id.
    pub region: String,
    /// The node that region would get, if it has one.
    pub node: Option<String>,
    /// Great-circle distance from the client in km, when both have positions.
    pub distance_km: Option<f64>,
    /// Whether this is the chosen region.
    pub chosen: bool,
    /// Why it was or was not chosen.
    pub why: String,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Route<'a> {
    /// Chosen region.
    pub region: &'a RegionTarget,
    /// Chosen node in it.
    pub node: &'a NodeTarget,
    /// Why.
    pub reason: RouteReason,
    /// Every region, with its distance and why it was or was not chosen.
    pub candidates: Vec<Candidate>,
}

/// Chooses region and node for a client at `client` (if located) joining a room
/// that the store places on `room_node` (if live). `None` when no region has a
/// node.
pub fn choose<'a>(
    regions: &'a [RegionTarget],
    default: &str,
    client: Option<Position>,
    room_node: Option<&str>,
) -> Option<Route<'a>> {
    let distance = |r: &RegionTarget| Some(client?.distance_km(&r.region.position?));
    let affinity = room_node.and_then(|id| {
        regions.iter().find_map(|r| r.nodes.iter().find(|n| n.id == id).map(|n| (r, n, RouteReason::RoomAffinity)))
    });
    let nearest = || {
        regions
            .iter()
            .filter(|r| !r.nodes.is_empty())
            .filter_map(|r| distance(r).map(|d| (r, d)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .and_then(|(r, _)| Some((r, r.nodes.first()?, RouteReason::Nearest)))
    };
    let fallback = || {
        let with_nodes = || regions.iter().filter(|r| !r.nodes.is_empty());
        let r = with_nodes().find(|r| r.region.id == default).or_else(|| with_nodes().next())?;
        Some((r, r.nodes.first()?, RouteReason::DefaultUnlocated))
    };
    let (region, node, reason) = affinity.or_else(nearest).or_else(fallback)?;

    let candidates = regions
        .iter()
        .map(|r| {
            let chosen = r.region.id == region.region.id;
            let d = distance(r);
            let why = if chosen {
                match reason {
                    RouteReason::RoomAffinity => format!("the room is live on node {}", node.id),
                    RouteReason::Nearest => "nearest region with a node".to_owned(),
                    RouteReason::DefaultUnlocated => "default region: the client could not be located".to_owned(),
                }
            } else if r.nodes.is_empty() {
                "no node available".to_owned()
            } else {
                match reason {
                    RouteReason::RoomAffinity => format!("the room is live in {}", region.region.id),
                    RouteReason::Nearest if d.is_none() => "region has no position".to_owned(),
                    RouteReason::Nearest => format!("farther than {}", region.region.id),
                    RouteReason::DefaultUnlocated => "not the default region".to_owned(),
                }
            };
            Candidate {
                region: r.region.id.clone(),
                node: r.nodes.first().map(|n| n.id.clone()),
                distance_km: d.map(|d| (d * 10.0).round() / 10.0),
                chosen,
                why,
            }
        })
        .collect();
    Some(Route { region, node, reason, candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONDON: Position = Position { latitude: 51.51, longitude: -0.13 };
    const SEATTLE: Position = Position { latitude: 47.61, longitude: -122.33 };
    const SINGAPORE: Position = Position { latitude: 1.35, longitude: 103.82 };

    fn target(id: &str, pos: Option<Position>, port: u16) -> RegionTarget {
        RegionTarget {
            region: Region { id: id.into(), position: pos },
            nodes: vec![NodeTarget { id: format!("{id}-1"), signal_addr: ([127, 0, 0, 1], port).into() }],
        }
    }

    fn three() -> Vec<RegionTarget> {
        vec![
            target("eu-west", Some(LONDON), 1),
            target("us-west", Some(SEATTLE), 2),
            target("ap-southeast", Some(SINGAPORE), 3),
        ]
    }

    #[test]
    fn an_unlocated_client_lands_on_the_default_regions_first_node() {
        let regions = vec![target("local", None, 7881)];
        let r = choose(&regions, "local", None, None).unwrap();
        assert_eq!(
            (r.region.region.id.as_str(), r.node.id.as_str(), r.reason),
            ("local", "local-1", RouteReason::DefaultUnlocated)
        );
    }

    #[test]
    fn a_client_in_paris_goes_to_eu_west_and_the_others_are_explained() {
        let regions = three();
        let paris = Position { latitude: 48.86, longitude: 2.35 };
        let r = choose(&regions, "us-west", Some(paris), None).unwrap();
        assert_eq!((r.region.region.id.as_str(), r.reason), ("eu-west", RouteReason::Nearest));
        let eu = &r.candidates[0];
        assert!(eu.chosen && eu.distance_km.unwrap() < 400.0, "{eu:?}");
        let us = &r.candidates[1];
        assert!(!us.chosen && us.distance_km.unwrap() > 7000.0 && us.why.contains("farther than eu-west"), "{us:?}");
    }

    #[test]
    fn a_live_room_keeps_its_node_wherever_the_joiner_is() {
        let regions = three();
        let r = choose(&regions, "eu-west", Some(SINGAPORE), Some("us-west-1")).unwrap();
        assert_eq!((r.node.id.as_str(), r.reason), ("us-west-1", RouteReason::RoomAffinity));
        // A room on a node this gateway does not know falls back to distance.
        let r = choose(&regions, "eu-west", Some(SINGAPORE), Some("gone-1")).unwrap();
        assert_eq!((r.region.region.id.as_str(), r.reason), ("ap-southeast", RouteReason::Nearest));
    }

    #[test]
    fn regions_without_nodes_are_skipped() {
        let mut regions = three();
        regions[0].nodes.clear();
        let r = choose(&regions, "eu-west", Some(LONDON), None).unwrap();
        assert_eq!(r.region.region.id, "us-west");
        assert_eq!(r.candidates[0].why, "no node available");
        regions.iter_mut().for_each(|r| r.nodes.clear());
        assert!(choose(&regions, "eu-west", Some(LONDON), None).is_none());
    }
}
