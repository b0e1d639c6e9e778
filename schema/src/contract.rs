//! The store contract: one suite that every [`Store`] back end must pass.
//! Used by `schema/tests/contract.rs` against memory and a real Postgres.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{RoomRecord, Store, TokenGrants, TokenRecord};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
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
        store.tokens_for_room("demo").await.unwrap(),
        vec![a.clone(), b.clone()],
        "tokens_for_room lists the room's tokens oldest first"
    );
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
    };
    assert_eq!(store.room("demo").await.unwrap(), None);
    assert_eq!(store.get_or_create_room(&first).await.unwrap(), first, "creates the room");
    let second = RoomRecord { sid: "RM_second".into(), created_at: at(1_700_000_999), ..first.clone() };
    assert_eq!(
        store.get_or_create_room(&second).await.unwrap(),
        first,
        "an existing room keeps its sid and creation time"
    );
    assert_eq!(store.room("demo").await.unwrap(), Some(first));
    assert!(store.delete_room("demo").await.unwrap());
    assert!(!store.delete_room("demo").await.unwrap());
    assert_eq!(store.room("demo").await.unwrap(), None);
}
