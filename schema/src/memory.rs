//! In-memory store for `meridian dev` and tests. One process only: a second
//! process has a store of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use meridian_ids::{NodeId, ParticipantIdentity, RegionId, RoomName};

use crate::{NodeRecord, RoomRecord, Store, StoreError, TokenRecord, WebhookRecord};

/// Rooms and tokens in process memory, lost on exit.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<RoomName, RoomRecord>,
    tokens: Vec<TokenRecord>,
    nodes: std::collections::BTreeMap<NodeId, NodeRecord>,
    /// The webhook outbox in enqueue order.
    outbox: Vec<Queued>,
}

#[derive(Debug)]
struct Queued {
    event: WebhookRecord,
    next_attempt_at: SystemTime,
    claimed_until: Option<SystemTime>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while holding it; the maps are still
        // consistent because every critical section is a single insert/lookup.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn record_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.tokens.iter().any(|t| t.id == token.id) {
            inner.tokens.push(token.clone());
        }
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.iter().find(|t| t.id == id).cloned())
    }

    async fn tokens(
        &self,
        room: Option<&RoomName>,
        identity: Option<&ParticipantIdentity>,
        limit: usize,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut tokens: Vec<TokenRecord> = self
            .lock()
            .tokens
            .iter()
            .filter(|t| room.is_none_or(|r| t.room == *r) && identity.is_none_or(|i| t.identity == *i))
            .cloned()
            .collect();
        tokens.sort_by(|a, b| (a.issued_at, &a.id).cmp(&(b.issued_at, &b.id)));
        tokens.truncate(limit);
        Ok(tokens)
    }

    async fn revoke_token(&self, id: &str, at: SystemTime) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.tokens.iter_mut().find(|t| t.id == id) {
            Some(t) => {
                t.revoked_at.get_or_insert(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn get_or_create_room(&self, room: &RoomRecord) -> Result<RoomRecord, StoreError> {
        let mut inner = self.lock();
        Ok(inner.rooms.entry(room.name.clone()).or_insert_with(|| room.clone()).clone())
    }

    async fn room(&self, name: &RoomName) -> Result<Option<RoomRecord>, StoreError> {
        Ok(self.lock().rooms.get(name).cloned())
    }

    async fn enqueue_webhook(&self, event: &WebhookRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.outbox.iter().any(|q| q.event.id == event.id) {
            inner.outbox.push(Queued { event: event.clone(), next_attempt_at: event.created_at, claimed_until: None });
        }
        Ok(())
    }

    async fn claim_webhook(&self, now: SystemTime, lease: Duration) -> Result<Option<WebhookRecord>, StoreError> {
        let mut inner = self.lock();
        let mut heads = std::collections::HashSet::new();
        for q in inner.outbox.iter_mut() {
            // Only the first waiting event of each URL and room may go.
            if !heads.insert((q.event.url.clone(), q.event.room.clone())) {
                continue;
            }
            if q.next_attempt_at <= now && q.claimed_until.is_none_or(|until| until <= now) {
                q.claimed_until = Some(now.checked_add(lease).unwrap_or(now));
                q.event.attempts = q.event.attempts.saturating_add(1);
                return Ok(Some(q.event.clone()));
            }
        }
        Ok(None)
    }

    async fn webhook_done(&self, id: &str) -> Result<(), StoreError> {
        self.lock().outbox.retain(|q| q.event.id != id);
        Ok(())
    }

    async fn webhook_retry(&self, id: &str, retry_at: SystemTime) -> Result<(), StoreError> {
        if let Some(q) = self.lock().outbox.iter_mut().find(|q| q.event.id == id) {
            q.next_attempt_at = retry_at;
            q.claimed_until = None;
        }
        Ok(())
    }

    async fn webhook_depth(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbox.len() as u64)
    }

    async fn sweep_unjoined_rooms(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.rooms.len();
        inner.rooms.retain(|_, r| {
            let timeout = match r.options.empty_timeout {
                0 => crate::DEFAULT_EMPTY_TIMEOUT,
                s => Duration::from_secs(u64::from(s)),
            };
            r.pinned || r.node.is_some() || r.created_at.checked_add(timeout).is_none_or(|end| end > now)
        });
        Ok((before - inner.rooms.len()) as u64)
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let mut rooms: Vec<RoomRecord> = self.lock().rooms.values().cloned().collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    async fn delete_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        Ok(self.lock().rooms.remove(name).is_some())
    }

    async fn release_room(&self, name: &RoomName) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.rooms.get_mut(name) {
            Some(r) if r.pinned => {
                r.node = None;
                Ok(true)
            }
            Some(_) => Ok(inner.rooms.remove(name).is_some()),
            None => Ok(false),
        }
    }

    async fn place_room(&self, name: &RoomName, region: &RegionId, node: &NodeId) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get_mut(name)
            .map(|r| {
                r.region = Some(region.clone());
                r.node = Some(node.clone());
            })
            .is_some())
    }

    async fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.lock().nodes.insert(node.id.clone(), node.clone());
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(self.lock().nodes.values().cloned().collect())
    }

    async fn remove_node(&self, id: &NodeId) -> Result<bool, StoreError> {
        Ok(self.lock().nodes.remove(id).is_some())
    }

    fn is_shared(&self) -> bool {
        false
    }
}
