//! The gateway's last good read of the registry and of room placements, for
//! routing while the store is down.
//!
//! The gateway stays stateless: this is a cache of what any gateway reads from
//! the store, rebuilt by the next good read. While the store answers, every join
//! reads it as before and refreshes the cache. When a read fails, joins route
//! from the last snapshot, judged at the time it was read (a node heard 1 s
//! before the snapshot counts as heard 1 s ago, however old the snapshot is), and
//! a room's node comes from the last read of that room. A join that would place
//! a room the cache does not know needs a write the store cannot take, so it is
//! refused with 503.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use meridian_ids::RoomName;
use meridian_schema::{NodeRecord, RoomRecord};

/// Rooms whose placement is remembered at most; past it the map starts over
/// (the live ones are read again on their next join while the store is up).
pub const MAX_CACHED_ROOMS: usize = 10_000;

/// A snapshot of the node registry and when it was read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The nodes as read.
    pub nodes: Vec<NodeRecord>,
    /// When they were read (the gateway's clock).
    pub read_at: SystemTime,
}

/// The last good reads.
#[derive(Default)]
pub struct RegistryCache {
    nodes: Mutex<Option<Snapshot>>,
    rooms: Mutex<HashMap<RoomName, RoomRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps and a snapshot: a panicking holder leaves them whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RegistryCache {
    /// Remembers a good read of the registry at `now`.
    pub fn nodes_read(&self, nodes: &[NodeRecord], now: SystemTime) {
        *lock(&self.nodes) = Some(Snapshot { nodes: nodes.to_vec(), read_at: now });
    }

    /// The last good read of the registry, if any.
    pub fn nodes(&self) -> Option<Snapshot> {
        lock(&self.nodes).clone()
    }

    /// Remembers a good read of room `name` (`None`: the store has no such room).
    pub fn room_read(&self, name: &RoomName, record: Option<&RoomRecord>) {
        let mut rooms = lock(&self.rooms);
        match record {
            Some(r) => {
                if rooms.len() >= MAX_CACHED_ROOMS && !rooms.contains_key(name) {
                    rooms.clear();
                }
                rooms.insert(name.clone(), r.clone());
            }
            None => {
                rooms.remove(name);
            }
        }
    }

    /// The last good read of room `name`, if it existed then.
    pub fn room(&self, name: &RoomName) -> Option<RoomRecord> {
        lock(&self.rooms).get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomRecord {
        RoomRecord {
            name: name.into(),
            sid: "RM_x".into(),
            region: Some("local".into()),
            node: Some("local-1".into()),
            created_at: SystemTime::UNIX_EPOCH,
            pinned: false,
            options: Default::default(),
        }
    }

    #[test]
    fn rooms_are_remembered_forgotten_and_bounded() {
        let cache = RegistryCache::default();
        let demo = RoomName::new("demo");
        cache.room_read(&demo, Some(&room("demo")));
        assert_eq!(cache.room(&demo).unwrap().node, Some("local-1".into()));
        cache.room_read(&demo, None);
        assert!(cache.room(&demo).is_none(), "a room the store no longer has is forgotten");
        for i in 0..(MAX_CACHED_ROOMS + 10) {
            cache.room_read(&format!("r{i}").into(), Some(&room("r")));
        }
        assert!(lock(&cache.rooms).len() <= MAX_CACHED_ROOMS);
        assert!(cache.nodes().is_none());
        cache.nodes_read(&[], SystemTime::UNIX_EPOCH);
        assert_eq!(cache.nodes().unwrap().read_at, SystemTime::UNIX_EPOCH);
    }
}
