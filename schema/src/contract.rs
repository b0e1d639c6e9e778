//! The store contract: one suite that every [`Store`] back end must pass.
//! Used by `schema/tests/contract.rs` against memory and a real Postgres.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_ids::{NodeId, RegionId, RoomName};

use crate::{NodeLoad, NodeRecord, RoomOptions, RoomRecord, Store, TokenGrants, TokenRecord, WebhookRecord};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs)).expect("a contract time in range")
}

fn token(id: &str, room: &str, identity: &str, issued: u64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        api_key: "devkey".into(),
        room: room.into(),
        identity: identity.into(),
        grants: TokenGrants {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: false,
            hidden: false,
            room_admin: true,
        },
        issued_at: at(issued),
        expires_at: at(issued + 3600),
        revoked_at: None,
    }
}

/// Runs every contract check against `store`, panicking with the failed check.
/// The store must be empty.
pub async fn run(store: &dyn Store) {
    tokens_round_trip(store).await;
    rooms_are_created_once(store).await;
    rooms_move_to_another_node(store).await;
    unjoined_rooms_are_swept_after_their_empty_timeout(store).await;
    nodes_heartbeat_and_leave(store).await;
    webhooks_go_in_order_per_room(store).await;
}

fn event(id: &str, room: &str, secs: u64) -> WebhookRecord {
    WebhookRecord {
        id: id.into(),
        url: "http://hooks.example/a".into(),
        room: room.into(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: at(secs),
        attempts: 0,
    }
}

/// The outbox: one room's events go one at a time in order; another room's
/// do not wait for them; a claim is held for its lease; a retry waits.
async fn webhooks_go_in_order_per_room(store: &dyn Store) {
    let lease = std::time::Duration::from_secs(1_000);
    let (a1, a2, b1) = (event("EV_a1", "alpha", 1_000), event("EV_a2", "alpha", 1_001), event("EV_b1", "beta", 1_002));
    for e in [&a1, &a2, &b1, &a1] {
        store.enqueue_webhook(e).await.unwrap();
    }
    assert_eq!(store.webhook_depth().await.unwrap(), 3, "an id enqueued twice is there once");
    let now = at(2_000);
    let first = store.claim_webhook(now, lease).await.unwrap().expect("one is due");
    assert_eq!((first.id.as_str(), first.attempts), ("EV_a1", 1), "the oldest first, its attempt counted");
    assert_eq!(first.body, a1.body);
    let second = store.claim_webhook(now, lease).await.unwrap().expect("another room's");
    assert_eq!(second.id, "EV_b1", "alpha's next waits for EV_a1; beta's does not");
    assert_eq!(store.claim_webhook(now, lease).await.unwrap(), None, "nothing else is free");

    store.webhook_retry("EV_a1", at(2_100)).await.unwrap();
    assert_eq!(store.claim_webhook(at(2_050), lease).await.unwrap(), None, "the retry waits, and EV_a2 behind it");
    let again = store.claim_webhook(at(2_100), lease).await.unwrap().expect("due again");
    assert_eq!((again.id.as_str(), again.attempts), ("EV_a1", 2));
    store.webhook_done("EV_a1").await.unwrap();
    let next = store.claim_webhook(at(2_100), lease).await.unwrap().expect("alpha's next");
    assert_eq!(next.id, "EV_a2");
    // A worker that died holding a claim loses it when the lease ends.
    assert_eq!(store.claim_webhook(at(2_101), lease).await.unwrap(), None);
    let reclaimed = store.claim_webhook(at(3_001), lease).await.unwrap().expect("EV_b1's lease ran out");
    assert_eq!((reclaimed.id.as_str(), reclaimed.attempts), ("EV_b1", 2));
    for id in ["EV_a2", "EV_b1"] {
        store.webhook_done(id).await.unwrap();
    }
    // Another URL's line does not wait for this one's.
    let (x1, x2) = (
        event("EV_x@0", "gamma", 4_000),
        WebhookRecord { id: "EV_x@1".into(), url: "http://b".into(), ..event("", "gamma", 4_000) },
    );
    store.enqueue_webhook(&x1).await.unwrap();
    store.enqueue_webhook(&x2).await.unwrap();
    let one = store.claim_webhook(at(4_001), lease).await.unwrap().expect("first URL's");
    let other = store.claim_webhook(at(4_001), lease).await.unwrap().expect("second URL's, side by side");
    assert_eq!((one.id.as_str(), other.id.as_str(), other.url.as_str()), ("EV_x@0", "EV_x@1", "http://b"));
    for id in ["EV_x@0", "EV_x@1"] {
        store.webhook_done(id).await.unwrap();
    }
    assert_eq!(store.webhook_depth().await.unwrap(), 0);
}

async fn rooms_move_to_another_node(store: &dyn Store) {
    let room = RoomRecord {
        name: "moving".into(),
        sid: "RM_moving".into(),
        region: Some("eu-west".into()),
        node: Some("eu-west-1".into()),
        created_at: at(1_700_000_000),
        pinned: false,
        options: Default::default(),
    };
    store.get_or_create_room(&room).await.unwrap();
    let (moving, us_west, us_west_2) = (room.name.clone(), RegionId::new("us-west"), NodeId::new("us-west-2"));
    assert!(store.place_room(&moving, &us_west, &us_west_2).await.unwrap());
    let moved = store.room(&moving).await.unwrap().unwrap();
    assert_eq!((moved.region, moved.node), (Some(us_west.clone()), Some(us_west_2.clone())));
    assert_eq!(moved.sid, "RM_moving", "the room keeps its sid when it moves");
    assert!(!store.place_room(&RoomName::new("absent"), &us_west, &us_west_2).await.unwrap());
    assert!(store.release_room(&moving).await.unwrap());
    assert_eq!(store.room(&moving).await.unwrap(), None, "an unpinned room goes when released");

    let pinned = RoomRecord { name: "pinned".into(), sid: "RM_pinned".into(), pinned: true, node: None, ..room };
    let name = pinned.name.clone();
    store.get_or_create_room(&pinned).await.unwrap();
    assert!(store.place_room(&name, &"eu-west".into(), &"eu-west-1".into()).await.unwrap());
    assert!(store.release_room(&name).await.unwrap());
    assert_eq!(store.room(&name).await.unwrap(), Some(pinned), "a pinned room keeps its region, not its node");
    assert!(store.delete_room(&name).await.unwrap());
    assert!(!store.release_room(&name).await.unwrap());
}

async fn nodes_heartbeat_and_leave(store: &dyn Store) {
    let node = |id: &str, seen: u64| NodeRecord {
        id: id.into(),
        region: "eu-west".into(),
        position: Some((51.51, -0.13)),
        signal_addr: "10.0.0.5:7881".into(),
        turn_urls: vec!["turn:10.0.0.5:3478?transport=udp".into()],
        capacity: 500,
        load: NodeLoad { participants: 3, tracks: 6, forwarded_bytes_per_sec: 125_000, cpu_cores: 0.25 },
        draining: false,
        last_seen: at(seen),
    };
    assert!(store.nodes().await.unwrap().is_empty());
    store.heartbeat(&node("eu-west-2", 1_700_000_000)).await.unwrap();
    store.heartbeat(&node("eu-west-1", 1_700_000_000)).await.unwrap();
    let later = NodeRecord { draining: true, position: None, ..node("eu-west-1", 1_700_000_002) };
    store.heartbeat(&later).await.unwrap();
    assert_eq!(
        store.nodes().await.unwrap(),
        vec![later, node("eu-west-2", 1_700_000_000)],
        "a heartbeat replaces the entry; nodes come ordered by id"
    );
    assert!(store.remove_node(&"eu-west-1".into()).await.unwrap());
    assert!(!store.remove_node(&"eu-west-1".into()).await.unwrap());
    assert_eq!(store.nodes().await.unwrap().len(), 1);
    assert!(store.remove_node(&"eu-west-2".into()).await.unwrap());
}

async fn tokens_round_trip(store: &dyn Store) {
    let a = token("TK_a", "demo", "alice", 1_700_000_000);
    let b = token("TK_b", "demo", "bob", 1_700_000_100);
    let c = token("TK_c", "other", "carol", 1_700_000_050);
    for t in [&b, &a, &c] {
        store.record_token(t).await.expect("record_token");
    }
    store.record_token(&a).await.expect("recording twice is a no-op");
    assert_eq!(store.token("TK_a").await.unwrap(), Some(a.clone()), "token round-trips");
    assert_eq!(store.token("TK_missing").await.unwrap(), None, "unknown token is None");
    assert_eq!(
        store.tokens(Some(&"demo".into()), None, 100).await.unwrap(),
        vec![a.clone(), b.clone()],
        "tokens lists the room's tokens oldest first"
    );
    assert_eq!(store.tokens(None, None, 100).await.unwrap(), vec![a.clone(), c.clone(), b.clone()], "every token");
    assert_eq!(store.tokens(None, Some(&"bob".into()), 100).await.unwrap(), vec![b.clone()], "by identity");
    assert_eq!(store.tokens(Some(&"other".into()), Some(&"bob".into()), 100).await.unwrap(), vec![], "both");
    assert_eq!(store.tokens(None, None, 1).await.unwrap(), vec![a.clone()], "at most `limit`");
    assert!(store.revoke_token("TK_a", at(1_700_000_500)).await.unwrap());
    assert!(store.revoke_token("TK_a", at(1_700_000_900)).await.unwrap(), "revoking twice is fine");
    assert_eq!(
        store.token("TK_a").await.unwrap().unwrap().revoked_at,
        Some(at(1_700_000_500)),
        "the first revocation time is kept"
    );
    assert!(!store.revoke_token("TK_missing", at(0)).await.unwrap());
}

async fn rooms_are_created_once(store: &dyn Store) {
    let first = RoomRecord {
        name: "demo".into(),
        sid: "RM_first".into(),
        region: Some("local".into()),
        node: Some("node-1".into()),
        created_at: at(1_700_000_000),
        pinned: false,
        options: RoomOptions {
            max_participants: 5,
            departure_timeout: 20,
            metadata: "created with".into(),
            empty_timeout: 60,
        },
    };
    let demo = first.name.clone();
    assert_eq!(store.room(&demo).await.unwrap(), None);
    assert_eq!(store.get_or_create_room(&first).await.unwrap(), first, "creates the room");
    let second = RoomRecord { sid: "RM_second".into(), created_at: at(1_700_000_999), ..first.clone() };
    assert_eq!(
        store.get_or_create_room(&second).await.unwrap(),
        first,
        "an existing room keeps its sid and creation time"
    );
    assert_eq!(store.room(&demo).await.unwrap(), Some(first.clone()));
    let other = RoomRecord { name: "another".into(), sid: "RM_other".into(), ..first.clone() };
    store.get_or_create_room(&other).await.unwrap();
    assert_eq!(store.rooms().await.unwrap(), vec![other.clone(), first], "every room, by name");
    assert!(store.delete_room(&other.name).await.unwrap());
    assert!(store.delete_room(&demo).await.unwrap());
    assert!(!store.delete_room(&demo).await.unwrap());
    assert_eq!(store.room(&demo).await.unwrap(), None);
}

/// Rooms nobody joined go after their `empty_timeout` (300 s when 0); placed
/// and pinned rooms stay.
async fn unjoined_rooms_are_swept_after_their_empty_timeout(store: &dyn Store) {
    let base = RoomRecord {
        name: "".into(),
        sid: "RM_sweep".into(),
        region: None,
        node: None,
        created_at: at(10_000),
        pinned: false,
        options: Default::default(),
    };
    let room = |name: &str, f: &dyn Fn(&mut RoomRecord)| {
        let mut r = RoomRecord { name: name.into(), sid: format!("RM_{name}").into(), ..base.clone() };
        f(&mut r);
        r
    };
    let rooms = [
        room("sweep-short", &|r| r.options.empty_timeout = 10),
        room("sweep-default", &|_| {}),
        room("sweep-placed", &|r| r.node = Some("node-1".into())),
        room("sweep-pinned", &|r| {
            r.pinned = true;
            r.region = Some("local".into())
        }),
    ];
    for r in &rooms {
        store.get_or_create_room(r).await.unwrap();
    }
    assert_eq!(store.sweep_unjoined_rooms(at(10_009)).await.unwrap(), 0, "none is due yet");
    assert_eq!(store.sweep_unjoined_rooms(at(10_010)).await.unwrap(), 1, "the 10 s one");
    assert_eq!(store.room(&"sweep-short".into()).await.unwrap(), None);
    assert_eq!(store.sweep_unjoined_rooms(at(10_300)).await.unwrap(), 1, "the default 300 s one");
    assert_eq!(store.sweep_unjoined_rooms(at(99_999)).await.unwrap(), 0, "placed and pinned rooms stay");
    for r in &rooms[2..] {
        assert!(store.delete_room(&r.name).await.unwrap());
    }
}
