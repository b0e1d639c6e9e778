//! Allocation quotas (RFC 8656 §7.2, 486 Allocation Quota Reached): per REST
//! username (one participant) and per relay. The gate counts an allocation when
//! the server's Allocate success answer goes out, and forgets it when the server
//! reports it closed ([`super::Gate::release`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::lock;
use crate::route::ClientRoute;

/// Default allocations per REST username (one participant): two peer connections
/// times three transports, with room for ICE restarts.
pub const DEFAULT_USER_QUOTA: usize = 32;
/// Default allocations per relay.
pub const DEFAULT_TOTAL_QUOTA: usize = 20_000;

#[derive(Default)]
struct Allocations {
    owner: HashMap<ClientRoute, String>,
    per_user: HashMap<String, usize>,
    /// Allocate requests passed to the server, by client and transaction.
    in_flight: HashMap<(ClientRoute, [u8; 12]), String>,
}

/// The live allocations by client and by username, against two quotas.
pub(super) struct Quotas {
    user: usize,
    total: usize,
    allocations: Mutex<Allocations>,
}

impl Quotas {
    /// At most `user` allocations per username and `total` in all.
    pub(super) fn new(user: usize, total: usize) -> Self {
        Self { user, total, allocations: Mutex::default() }
    }

    /// An Allocate request `txid` from `client`, authenticated as `username`, is
    /// about to go to the server: `Err` with the username's live allocations when
    /// a quota is reached. A client that has an allocation already passes (the
    /// server answers 437).
    pub(super) fn request(&self, client: ClientRoute, txid: [u8; 12], username: &str) -> Result<(), usize> {
        let mut a = lock(&self.allocations);
        if a.owner.contains_key(&client) {
            return Ok(());
        }
        let mine = a.per_user.get(username).copied().unwrap_or(0);
        if mine >= self.user || a.owner.len() >= self.total {
            return Err(mine);
        }
        if a.in_flight.len() >= self.total {
            a.in_flight.clear(); // answers lost; forget them rather than grow
        }
        a.in_flight.insert((client, txid), username.to_owned());
        Ok(())
    }

    /// The server answered `client`'s Allocate `txid`; a success counts it.
    pub(super) fn answered(&self, client: ClientRoute, txid: [u8; 12], success: bool) {
        let mut a = lock(&self.allocations);
        if let Some(user) = a.in_flight.remove(&(client, txid)) {
            if success && a.owner.insert(client, user.clone()).is_none() {
                *a.per_user.entry(user).or_default() += 1;
            }
        }
    }

    /// Forgets `client`'s allocation.
    pub(super) fn release(&self, client: ClientRoute) {
        let mut a = lock(&self.allocations);
        if let Some(user) = a.owner.remove(&client) {
            if let Some(n) = a.per_user.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    a.per_user.remove(&user);
                }
            }
        }
    }

    /// The username `client`'s allocation was made with, if it has one.
    pub(super) fn owner(&self, client: ClientRoute) -> Option<String> {
        lock(&self.allocations).owner.get(&client).cloned()
    }

    /// Live allocations counted.
    pub(super) fn len(&self) -> usize {
        lock(&self.allocations).owner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{answer, code_of, conn, request, SECRET, SRC};
    use super::super::verdict::Verdict;
    use super::super::{Gate, GateConfig};
    use super::*;
    use crate::policy::PeerPolicy;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::SystemTime;
    use stun::message::{Message, MessageType, METHOD_ALLOCATE};

    fn client(port: u16) -> ClientRoute {
        ClientRoute { listener: "198.51.100.1:3478".parse().expect("addr"), client: SocketAddr::new(SRC.ip(), port) }
    }

    #[test]
    fn only_answered_allocations_count_and_a_release_frees_the_slot() {
        let q = Quotas::new(2, 3);
        assert_eq!(q.request(client(1), [1; 12], "alice"), Ok(()));
        assert_eq!(q.len(), 0, "not before the server's answer");
        q.answered(client(1), [1; 12], false);
        assert_eq!(q.len(), 0, "an error answer counts nothing");
        assert_eq!(q.request(client(1), [2; 12], "alice"), Ok(()));
        q.answered(client(1), [2; 12], true);
        assert_eq!((q.len(), q.owner(client(1)).as_deref()), (1, Some("alice")));
        assert_eq!(q.request(client(1), [3; 12], "alice"), Ok(()), "the same client again: the server's to refuse");
        q.release(client(1));
        assert_eq!((q.len(), q.owner(client(1))), (0, None));
    }

    #[test]
    fn the_user_quota_and_the_total_quota_each_refuse() {
        let q = Quotas::new(2, 3);
        for (n, user) in [(1u8, "alice"), (2, "alice"), (3, "bob")] {
            assert_eq!(q.request(client(n.into()), [n; 12], user), Ok(()));
            q.answered(client(n.into()), [n; 12], true);
        }
        assert_eq!(q.request(client(4), [4; 12], "alice"), Err(2), "alice has her 2");
        assert_eq!(q.request(client(4), [4; 12], "carol"), Err(0), "the relay has its 3");
        q.release(client(3));
        assert_eq!(q.request(client(4), [4; 12], "carol"), Ok(()), "bob's slot freed");
    }

    #[tokio::test]
    async fn allocations_over_the_user_quota_get_486_and_released_ones_free_the_slot() {
        let g = Gate::new(GateConfig {
            user_quota: 1,
            ..GateConfig::new(PeerPolicy::default(), SECRET.to_vec(), "meridian".into())
        });
        let c = conn(Arc::clone(&g));
        let (a, b): (SocketAddr, SocketAddr) = (SRC, "203.0.113.9:40001".parse().unwrap());
        let nonce = g.nonces.issue(a.ip(), SystemTime::now());
        let first = request(METHOD_ALLOCATE, &[], Some(&nonce), &[]);
        assert!(matches!(c.judge(&first.raw, a), Verdict::Queue(_)));
        // The server's success answer makes it count.
        let mut ok = Message::new();
        ok.build(&[
            Box::new(first.clone()),
            Box::new(MessageType::new(METHOD_ALLOCATE, stun::message::CLASS_SUCCESS_RESPONSE)),
        ])
        .unwrap();
        assert!(c.on_answer(&ok.raw, a, std::time::Instant::now()), "the answer goes out");
        assert_eq!(g.stats().allocations, 1);
        let second = request(METHOD_ALLOCATE, &[], Some(&nonce), &[]);
        assert_eq!(code_of(&answer(c.judge(&second.raw, b))), 486);
        g.release(ClientRoute { listener: c.listener_addr(), client: a });
        assert_eq!(g.stats().allocations, 0);
        assert!(matches!(c.judge(&second.raw, b), Verdict::Queue(_)), "the slot is free again");
    }
}
