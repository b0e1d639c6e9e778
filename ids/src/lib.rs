//! Meridian's identifiers, one type each, so that a signature says which text it
//! takes: a [`RoomName`] cannot be passed where a [`RoomSid`] is meant, nor a
//! [`NodeId`] for a [`RegionId`].
//!
//! | type | what | where it comes from | format |
//! |---|---|---|---|
//! | [`RoomName`] | a room, as the app names it | the token's `video.room` grant | any text |
//! | [`ParticipantIdentity`] | who joins, as the app names them | the token's `sub` | any text |
//! | [`RoomSid`] | one room's life in the store | [`RoomSid::random`] | `RM_` + 12 alphanumerics |
//! | [`ParticipantSid`] | one signal session of one identity | [`ParticipantSid::random`] | `PA_` + 12 alphanumerics |
//! | [`TrackSid`] | one publication | [`TrackSid::random`] | `TR_` + 12 alphanumerics |
//! | [`NodeId`] | one SFU node | config `sfu.node_id` | any text, unique across regions |
//! | [`RegionId`] | a region | config `sfu.region`, `gateway.default_region` | any text, e.g. `eu-west` |
//!
//! Each is a `String` inside and nothing more: making one checks nothing, and
//! serde reads and writes it as a plain string. They borrow as `&str`
//! ([`Borrow`]), so a map keyed by one can be looked up with a `&str`; protobuf
//! messages (`livekit-protocol`) and the store's columns keep plain strings, and
//! the code converts at that edge (`as_str`, `to_string`, `From<String>`).

use std::borrow::Borrow;
use std::fmt;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

/// Random alphanumerics after a sid's prefix (LiveKit's length).
pub const SID_RANDOM_CHARS: usize = 12;

/// One identifier type: a `String` newtype with its conversions.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps `value` as it is: nothing is checked or normalised.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned (for a protobuf field or a column without a copy).
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self.0.as_str(), f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

/// A sid: an [`id_type!`] with a LiveKit prefix and a random constructor.
macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        id_type!($(#[$doc])* $name);

        impl $name {
            #[doc = concat!("The prefix of every ", stringify!($name), ": `", $prefix, "`.")]
            pub const PREFIX: &'static str = $prefix;

            #[doc = concat!("A fresh sid: `", $prefix, "` and [`SID_RANDOM_CHARS`] random alphanumerics.")]
            pub fn random() -> Self {
                Self::random_with(&mut rand::rng())
            }

            /// As [`Self::random`], drawing from `rng`.
            pub fn random_with(rng: &mut impl Rng) -> Self {
                Self(format!("{}{}", Self::PREFIX, Alphanumeric.sample_string(rng, SID_RANDOM_CHARS)))
            }
        }
    };
}

id_type!(
    /// A room's name, as the app chose it: the `video.room` grant of the join
    /// token (LiveKit `VideoGrant.room`), `Room.name` in the signal protocol,
    /// the `rooms.name` key in the store. Any text; the token verifier refuses
    /// an empty one.
    RoomName
);

id_type!(
    /// Who a participant is, as the app named them: the join token's `sub`
    /// claim, `ParticipantInfo.identity` in the signal protocol. Unique within a
    /// room: a second join with the same identity replaces the first
    /// (`DUPLICATE_IDENTITY`). Any text; the token verifier refuses an empty one.
    ParticipantIdentity
);

sid_type!(
    /// A webhook event's id (LiveKit `WebhookEvent.id`): `EV_` and 12 random
    /// alphanumerics, one per event, so a receiver can drop a repeat.
    EventId,
    "EV_"
);

sid_type!(
    /// A room's sid (LiveKit `Room.sid`): `RM_` and 12 random alphanumerics,
    /// made when the room is first recorded and kept while the store holds it
    /// (a room moved to another node keeps it).
    RoomSid,
    "RM_"
);

sid_type!(
    /// A participant's sid (LiveKit `ParticipantInfo.sid`): `PA_` and 12 random
    /// alphanumerics, one per signal session, so a rejoin with the same identity
    /// gets a new one.
    ParticipantSid,
    "PA_"
);

sid_type!(
    /// A published track's sid (LiveKit `TrackInfo.sid`): `TR_` and 12 random
    /// alphanumerics, made when the node answers the `AddTrackRequest`. It is the
    /// down-track's track id, and the second half of its stream id
    /// (`PA_…|TR_…`).
    TrackSid,
    "TR_"
);

id_type!(
    /// An SFU node's id (LiveKit `ServerInfo.node_id`, the `nodes.id` key of the
    /// registry): config `sfu.node_id`, by default `<region>-<hostname>`. Unique
    /// across regions.
    NodeId
);

id_type!(
    /// A region's id, e.g. `eu-west` (LiveKit `ServerInfo.region` and
    /// `JoinResponse.server_region`): config `sfu.region` of each node in it and
    /// `gateway.default_region`, the `nodes.region` and `rooms.region` columns.
    RegionId
);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn sids_are_the_prefix_and_twelve_alphanumerics() {
        for sid in
            [RoomSid::random().into_string(), ParticipantSid::random().into_string(), TrackSid::random().into_string()]
        {
            let (prefix, rest) = sid.split_at(3);
            assert!(["RM_", "PA_", "TR_"].contains(&prefix), "{sid}");
            assert!(rest.len() == SID_RANDOM_CHARS && rest.chars().all(|c| c.is_ascii_alphanumeric()), "{sid}");
        }
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(TrackSid::random_with(&mut rng), TrackSid::random_with(&mut StdRng::seed_from_u64(7)));
    }

    #[test]
    fn an_id_reads_writes_and_looks_up_as_its_text() {
        let room = RoomName::new("demo");
        assert_eq!(serde_json::to_string(&room).unwrap(), "\"demo\"");
        assert_eq!(serde_json::from_str::<RoomName>("\"demo\"").unwrap(), room);
        assert_eq!((room.to_string(), format!("{room:>6}")), ("demo".to_owned(), "  demo".to_owned()));
        let rooms = HashMap::from([(room.clone(), 1)]);
        assert_eq!(rooms.get("demo"), Some(&1), "a map keyed by ids is looked up by &str");
        assert!(room == "demo" && room == *"demo" && room.as_str() == "demo");
    }
}
