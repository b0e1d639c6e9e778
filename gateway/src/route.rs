//! Where a join goes: the region table the gateway routes over, and the choice of
//! region and node for one client. Pure: the caller passes the located position.

use std::net::SocketAddr;

use meridian_geo::{choose_region, Position, Region, RouteReason};

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

/// A routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Route<'a> {
    /// Chosen region.
    pub region: &'a RegionTarget,
    /// Chosen node in it.
    pub node: &'a NodeTarget,
    /// Why the region was chosen.
    pub reason: RouteReason,
}

/// Picks region and node for a client at `client` (if located): the nearest region
/// that has a node, else `default`. `None` when no region has a node.
pub fn choose<'a>(regions: &'a [RegionTarget], default: &str, client: Option<Position>) -> Option<Route<'a>> {
    let live: Vec<Region> = regions.iter().filter(|r| !r.nodes.is_empty()).map(|r| r.region.clone()).collect();
    let (chosen, reason) = choose_region(&live, default, client)?;
    let region = regions.iter().find(|r| r.region.id == chosen.id)?;
    Some(Route { region, node: region.nodes.first()?, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, pos: Option<Position>, port: u16) -> RegionTarget {
        RegionTarget {
            region: Region { id: id.into(), position: pos },
            nodes: vec![NodeTarget { id: format!("{id}-1"), signal_addr: ([127, 0, 0, 1], port).into() }],
        }
    }

    #[test]
    fn an_unlocated_client_lands_on_the_default_regions_first_node() {
        let regions = vec![target("local", None, 7881)];
        let r = choose(&regions, "local", None).unwrap();
        assert_eq!(
            (r.region.region.id.as_str(), r.node.id.as_str(), r.reason),
            ("local", "local-1", RouteReason::DefaultUnlocated)
        );
    }

    #[test]
    fn regions_without_nodes_are_skipped() {
        let mut empty = target("eu-west", Some(Position { latitude: 51.5, longitude: 0.0 }), 1);
        empty.nodes.clear();
        let regions = vec![empty, target("us-west", Some(Position { latitude: 47.6, longitude: -122.3 }), 2)];
        let r = choose(&regions, "eu-west", Some(Position { latitude: 48.8, longitude: 2.3 })).unwrap();
        assert_eq!(r.region.region.id, "us-west");
    }
}
