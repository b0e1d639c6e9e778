//! Where a join goes: the choice of region and node for one client, with the
//! reasons. Pure: the caller passes the registry's nodes, the client's located
//! position, the room's node from the store, `now` and a random source.
//!
//! A node is *healthy* when it heartbeated within [`STALE_AFTER`], is not draining,
//! and has fewer participants than its capacity. Order of precedence:
//! 1. room affinity: a live room's later joiners go to the node hosting it while
//!    that node is heard from (draining or full, it still keeps its rooms);
//! 2. a room pinned to a region (created with one through the API) goes there
//!    while the region has a healthy node;
//! 3. the nearest region with a healthy node, by great-circle distance;
//! 4. the default region, for clients that cannot be located (or, if it has no
//!    healthy node, any region that has one).
//!
//! Inside the region: the less loaded of two healthy nodes drawn at random
//! ("power of two choices"), load being participants over capacity.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use meridian_geo::Position;
use meridian_ids::{NodeId, RegionId};
use meridian_schema::NodeRecord;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::Serialize;

/// A node unheard for longer than this gets no joins (5 s: two missed 2 s heartbeats and slack).
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// Why a region and node were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The room is live on this node; joiners follow it.
    RoomAffinity,
    /// The room is pinned to this region.
    PinnedRegion,
    /// The client was located and this is the nearest region with a healthy node.
    Nearest,
    /// The client could not be located (private, loopback or unknown address, or no
    /// database), so the default region was used.
    DefaultUnlocated,
}

/// A node's fitness for new joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Takes joins.
    Healthy,
    /// No heartbeat within [`STALE_AFTER`].
    Stale,
    /// Shutting down: keeps its rooms, takes no new ones.
    Draining,
    /// At or over capacity.
    Overloaded,
}

/// The state of `node` at `now`.
pub fn node_state(node: &NodeRecord, now: SystemTime) -> NodeState {
    let age = now.duration_since(node.last_seen).unwrap_or(Duration::ZERO);
    if age > STALE_AFTER {
        NodeState::Stale
    } else if node.draining {
        NodeState::Draining
    } else if node.load.participants >= node.capacity {
        NodeState::Overloaded
    } else {
        NodeState::Healthy
    }
}

/// One node as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: NodeId,
    /// Its state.
    pub state: NodeState,
    /// Participants on it.
    pub participants: u32,
    /// Its capacity in participants.
    pub capacity: u32,
}

/// One region as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Region id.
    pub region: RegionId,
    /// Great-circle distance from the client in km, when both have positions.
    pub distance_km: Option<f64>,
    /// Whether this is the chosen region.
    pub chosen: bool,
    /// Why it was or was not chosen.
    pub why: String,
    /// Its nodes.
    pub nodes: Vec<NodeView>,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Chosen region.
    pub region: RegionId,
    /// Chosen node.
    pub node: NodeRecord,
    /// Why.
    pub reason: RouteReason,
    /// Every region, with its distance and why it was or was not chosen.
    pub candidates: Vec<Candidate>,
}

struct RegionNodes<'a> {
    position: Option<Position>,
    nodes: Vec<&'a NodeRecord>,
    healthy: Vec<&'a NodeRecord>,
}

/// Whether a decision also explains itself ([`Route::candidates`]). The join path
/// does not need the explanation, and building it is most of a decision's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explain {
    /// Leave `candidates` empty.
    No,
    /// Fill `candidates` with every region and why it won or lost.
    Yes,
}

/// Chooses region and node for a client at `client` (if located) joining a room
/// that the store places on `room_node` (if any). `None` when no node is healthy
/// and the room has no live node.
#[allow(clippy::too_many_arguments)] // each input is one fact the decision weighs; a struct would only rename them
pub fn choose(
    nodes: &[NodeRecord],
    default_region: &RegionId,
    client: Option<Position>,
    room_node: Option<&NodeId>,
    pinned_region: Option<&RegionId>,
    now: SystemTime,
    rng: &mut impl Rng,
    explain: Explain,
) -> Option<Route> {
    let mut regions: BTreeMap<&RegionId, RegionNodes> = BTreeMap::new();
    for n in nodes {
        let r = regions.entry(&n.region).or_insert_with(|| RegionNodes {
            position: None,
            nodes: Vec::new(),
            healthy: Vec::new(),
        });
        r.position = r.position.or(n.position.map(|(latitude, longitude)| Position { latitude, longitude }));
        r.nodes.push(n);
        if node_state(n, now) == NodeState::Healthy {
            r.healthy.push(n);
        }
    }
    let distance = |r: &RegionNodes| Some(client?.distance_km(&r.position?));

    let affinity = room_node
        .and_then(|id| nodes.iter().find(|n| n.id == *id))
        .filter(|n| node_state(n, now) != NodeState::Stale)
        .map(|n| (&n.region, n, RouteReason::RoomAffinity));
    let (region, node, reason) = match affinity {
        Some(found) => found,
        None => {
            let nearest = regions
                .iter()
                .filter(|(_, r)| !r.healthy.is_empty())
                .filter_map(|(id, r)| distance(r).map(|d| (*id, r, d)))
                .min_by(|a, b| a.2.total_cmp(&b.2))
                .map(|(id, r, _)| (id, r, RouteReason::Nearest));
            let fallback = || {
                let usable = |(_, r): &(&&RegionId, &RegionNodes)| !r.healthy.is_empty();
                regions
                    .iter()
                    .filter(usable)
                    .find(|(id, _)| **id == default_region)
                    .or_else(|| regions.iter().find(|e| usable(e)))
                    .map(|(id, r)| (*id, r, RouteReason::DefaultUnlocated))
            };
            let pinned = pinned_region
                .and_then(|id| regions.get_key_value(id))
                .filter(|(_, r)| !r.healthy.is_empty())
                .map(|(id, r)| (*id, r, RouteReason::PinnedRegion));
            let (id, r, reason) = pinned.or(nearest).or_else(fallback)?;
            (id, pick(&r.healthy, rng)?, reason)
        }
    };

    if explain == Explain::No {
        return Some(Route { region: region.to_owned(), node: node.clone(), reason, candidates: Vec::new() });
    }
    let candidates = regions
        .iter()
        .map(|(id, r)| {
            let chosen = *id == region;
            let d = distance(r);
            let why = if chosen {
                match reason {
                    RouteReason::RoomAffinity => format!("the room is live on node {}", node.id),
                    RouteReason::PinnedRegion => format!("the room is pinned to this region; chose {}", node.id),
                    RouteReason::Nearest => format!("nearest region with a healthy node; chose {}", node.id),
                    RouteReason::DefaultUnlocated => {
                        format!("default region: the client could not be located; chose {}", node.id)
                    }
                }
            } else if r.healthy.is_empty() {
                "no healthy node".to_owned()
            } else {
                match reason {
                    RouteReason::RoomAffinity => format!("the room is live in {region}"),
                    RouteReason::PinnedRegion => format!("the room is pinned to {region}"),
                    RouteReason::Nearest if d.is_none() => "region has no position".to_owned(),
                    RouteReason::Nearest => format!("farther than {region}"),
                    RouteReason::DefaultUnlocated => "not the default region".to_owned(),
                }
            };
            Candidate {
                region: (*id).to_owned(),
                distance_km: d.map(|d| (d * 10.0).round() / 10.0),
                chosen,
                why,
                nodes: r
                    .nodes
                    .iter()
                    .map(|n| NodeView {
                        id: n.id.clone(),
                        state: node_state(n, now),
                        participants: n.load.participants,
                        capacity: n.capacity,
                    })
                    .collect(),
            }
        })
        .collect();
    Some(Route { region: region.to_owned(), node: node.clone(), reason, candidates })
}

/// The less loaded of two nodes drawn at random from `healthy`.
fn pick<'a>(healthy: &[&'a NodeRecord], rng: &mut impl Rng) -> Option<&'a NodeRecord> {
    healthy.choose_multiple(rng, 2).copied().min_by(|a, b| load(a).total_cmp(&load(b)))
}

/// Participants over capacity; a node without capacity counts as full.
fn load(n: &NodeRecord) -> f64 {
    if n.capacity == 0 {
        f64::INFINITY
    } else {
        f64::from(n.load.participants) / f64::from(n.capacity)
    }
}

#[cfg(test)]
mod tests {
    use meridian_schema::NodeLoad;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const LONDON: (f64, f64) = (51.51, -0.13);
    const SEATTLE: (f64, f64) = (47.61, -122.33);
    const SINGAPORE: (f64, f64) = (1.35, 103.82);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(1_800_000_000)).expect("a time in range")
    }

    fn node(id: &str, region: &str, pos: Option<(f64, f64)>, participants: u32) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            region: region.into(),
            position: pos,
            signal_addr: "127.0.0.1:1".into(),
            turn_urls: vec![],
            capacity: 100,
            load: NodeLoad { participants, ..NodeLoad::default() },
            draining: false,
            last_seen: now() - Duration::from_secs(1),
        }
    }

    fn three() -> Vec<NodeRecord> {
        vec![
            node("eu-west-1", "eu-west", Some(LONDON), 10),
            node("us-west-1", "us-west", Some(SEATTLE), 10),
            node("ap-southeast-1", "ap-southeast", Some(SINGAPORE), 10),
        ]
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn pos((latitude, longitude): (f64, f64)) -> Position {
        Position { latitude, longitude }
    }

    #[test]
    fn an_unlocated_client_lands_in_the_default_region() {
        let nodes = vec![node("local-1", "local", None, 0)];
        let local = RegionId::new("local");
        let r = choose(&nodes, &local, None, None, None, now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!(
            (r.region.as_str(), r.node.id.as_str(), r.reason),
            ("local", "local-1", RouteReason::DefaultUnlocated)
        );
    }

    #[test]
    fn a_client_in_paris_goes_to_eu_west_and_the_others_are_explained() {
        let paris = Position { latitude: 48.86, longitude: 2.35 };
        let us_west = RegionId::new("us-west");
        let r = choose(&three(), &us_west, Some(paris), None, None, now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!((r.region.as_str(), r.reason), ("eu-west", RouteReason::Nearest));
        let eu = r.candidates.iter().find(|c| c.region == "eu-west").unwrap();
        assert!(eu.chosen && eu.distance_km.unwrap() < 400.0, "{eu:?}");
        let us = r.candidates.iter().find(|c| c.region == "us-west").unwrap();
        assert!(!us.chosen && us.distance_km.unwrap() > 7000.0 && us.why.contains("farther than eu-west"), "{us:?}");
    }

    #[test]
    fn stale_draining_and_full_nodes_get_no_new_joins() {
        let eu_west = RegionId::new("eu-west");
        let mut nodes = three();
        nodes[0].last_seen = now() - STALE_AFTER - Duration::from_millis(1);
        let r = choose(&nodes, &eu_west, Some(pos(LONDON)), None, None, now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!(r.region, "us-west", "the stale London node is skipped");
        let eu = r.candidates.iter().find(|c| c.region == "eu-west").unwrap();
        assert_eq!((eu.why.as_str(), eu.nodes[0].state), ("no healthy node", NodeState::Stale));

        let mut nodes = three();
        nodes[0].draining = true;
        nodes[1].load.participants = 100;
        let r = choose(&nodes, &eu_west, Some(pos(LONDON)), None, None, now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!(r.region, "ap-southeast", "draining London and full Seattle are skipped");
    }

    #[test]
    fn a_live_room_keeps_its_node_until_the_node_goes_stale() {
        let (eu_west, us_west_1) = (RegionId::new("eu-west"), NodeId::new("us-west-1"));
        let mut nodes = three();
        nodes[1].draining = true;
        let r = choose(&nodes, &eu_west, Some(pos(SINGAPORE)), Some(&us_west_1), None, now(), &mut rng(), Explain::Yes)
            .unwrap();
        assert_eq!(
            (r.node.id.as_str(), r.reason),
            ("us-west-1", RouteReason::RoomAffinity),
            "draining keeps its rooms"
        );
        nodes[1].last_seen = now() - Duration::from_secs(60);
        let r = choose(&nodes, &eu_west, Some(pos(SINGAPORE)), Some(&us_west_1), None, now(), &mut rng(), Explain::Yes)
            .unwrap();
        assert_eq!((r.region.as_str(), r.reason), ("ap-southeast", RouteReason::Nearest), "a dead node's room moves");
    }

    #[test]
    fn two_random_choices_prefer_the_less_loaded_node() {
        let nodes = vec![node("eu-west-1", "eu-west", Some(LONDON), 90), node("eu-west-2", "eu-west", Some(LONDON), 5)];
        let (mut rng, eu_west) = (rng(), RegionId::new("eu-west"));
        for _ in 0..20 {
            let r = choose(&nodes, &eu_west, Some(pos(LONDON)), None, None, now(), &mut rng, Explain::Yes).unwrap();
            assert_eq!(r.node.id, "eu-west-2");
        }
    }

    #[test]
    fn nothing_healthy_means_no_route() {
        let mut nodes = three();
        nodes.iter_mut().for_each(|n| n.draining = true);
        let eu_west = RegionId::new("eu-west");
        assert!(choose(&nodes, &eu_west, Some(pos(LONDON)), None, None, now(), &mut rng(), Explain::Yes).is_none());
        assert!(choose(&[], &eu_west, None, None, None, now(), &mut rng(), Explain::Yes).is_none());
    }

    #[test]
    fn a_pinned_room_goes_to_its_region_while_it_has_a_healthy_node() {
        let (eu_west, asia) = (RegionId::new("eu-west"), RegionId::new("ap-southeast"));
        let mut nodes = three();
        let r =
            choose(&nodes, &eu_west, Some(pos(LONDON)), None, Some(&asia), now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!((r.region.as_str(), r.reason), ("ap-southeast", RouteReason::PinnedRegion));
        nodes[2].draining = true;
        let r =
            choose(&nodes, &eu_west, Some(pos(LONDON)), None, Some(&asia), now(), &mut rng(), Explain::Yes).unwrap();
        assert_eq!((r.region.as_str(), r.reason), ("eu-west", RouteReason::Nearest), "no healthy node there: nearest");
    }
}
