//! Who subscribes to what: a subscriber's choices (LiveKit's `auto_subscribe`,
//! `UpdateSubscription` and `UpdateTrackSettings`) and a publisher's
//! permissions (`SubscriptionPermission`). Pure state, in the terms of LiveKit's
//! `subscriptionmanager.go` and `uptrackmanager.go`; the room brings each
//! subscriber's down-tracks in line with it (`Room::reconcile`).
//!
//! A subscriber gets a track's down-track when it wants the track (its explicit
//! choice, else its `auto_subscribe`), its token lets it subscribe, and the
//! publisher's permissions allow it. Losing permission removes the down-track
//! but keeps the wish, so permission granted back subscribes it again.

use std::collections::{HashMap, HashSet};

use livekit_protocol as proto;
use meridian_ids::{ParticipantIdentity, TrackSid};

/// Tracks one subscriber may hold explicit choices or settings for. A client
/// names live tracks, so this is far above any real room; the cap keeps a
/// client naming made-up sids from growing the node's memory.
pub const MAX_TRACK_CHOICES: usize = 1024;
/// Entries of one `SubscriptionPermission.track_permissions`.
pub const MAX_PERMISSION_ENTRIES: usize = 1024;
/// Track sids of one `TrackPermission`.
pub const MAX_PERMISSION_TRACKS: usize = 1024;

/// Which simulcast layer a subscriber asks for of one track
/// (`UpdateTrackSettings`: `width`/`height` when set, else `quality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// No settings yet: the top layer, as LiveKit's down-tracks start.
    #[default]
    Top,
    /// LiveKit's `VideoQuality` (0 LOW, 1 MEDIUM, 2 HIGH).
    Quality(u8),
    /// The size of the subscriber's tile, in pixels (adaptive stream).
    Size(u32, u32),
}

impl Preference {
    /// The preference `UpdateTrackSettings` states.
    pub fn of(req: &proto::UpdateTrackSettings) -> Self {
        if req.width > 0 || req.height > 0 {
            Self::Size(req.width, req.height)
        } else {
            // OFF (3) and unknown values: the top, as LiveKit clamps them.
            Self::Quality(u8::try_from(req.quality).ok().filter(|q| *q <= 2).unwrap_or(2))
        }
    }
}

/// What one subscriber asked for.
#[derive(Debug)]
pub struct Choices {
    auto_subscribe: bool,
    explicit: HashMap<TrackSid, bool>,
    disabled: HashSet<TrackSid>,
    preferences: HashMap<TrackSid, Preference>,
    /// The `allowed` last told in a `SubscriptionPermissionUpdate`, by track.
    told: HashMap<TrackSid, bool>,
    /// Down-tracks made of each track so far (see `PublishedTrack::new_sink`).
    generations: HashMap<TrackSid, usize>,
}

impl Choices {
    /// No choices yet: every track is wanted when `auto_subscribe` (the `/rtc`
    /// URL's `auto_subscribe`, default on), none otherwise.
    pub fn new(auto_subscribe: bool) -> Self {
        Self {
            auto_subscribe,
            explicit: HashMap::new(),
            disabled: HashSet::new(),
            preferences: HashMap::new(),
            told: HashMap::new(),
            generations: HashMap::new(),
        }
    }

    /// Whether the subscriber wants `track`.
    pub fn wants(&self, track: &TrackSid) -> bool {
        self.explicit.get(track).copied().unwrap_or(self.auto_subscribe)
    }

    /// Records `UpdateSubscription{subscribe}` for `tracks`. Errors, changing
    /// nothing, when it would hold choices for over [`MAX_TRACK_CHOICES`] tracks.
    pub fn choose(&mut self, tracks: &HashSet<TrackSid>, subscribe: bool) -> Result<(), String> {
        let new = tracks.iter().filter(|t| !self.explicit.contains_key(*t)).count();
        if self.explicit.len().saturating_add(new) > MAX_TRACK_CHOICES {
            return Err(format!("subscription choices for more than {MAX_TRACK_CHOICES} tracks"));
        }
        for t in tracks {
            self.explicit.insert(t.clone(), subscribe);
        }
        Ok(())
    }

    /// Records `UpdateTrackSettings{disabled}` for `track`; returns whether it
    /// changed. Errors, changing nothing, over [`MAX_TRACK_CHOICES`] tracks.
    pub fn set_disabled(&mut self, track: &TrackSid, disabled: bool) -> Result<bool, String> {
        if !disabled {
            return Ok(self.disabled.remove(track));
        }
        if !self.disabled.contains(track) && self.disabled.len() >= MAX_TRACK_CHOICES {
            return Err(format!("track settings for more than {MAX_TRACK_CHOICES} tracks"));
        }
        Ok(self.disabled.insert(track.clone()))
    }

    /// Records the layer preference of `UpdateTrackSettings` for `track`;
    /// returns whether it changed. Errors, changing nothing, over
    /// [`MAX_TRACK_CHOICES`] tracks.
    pub fn set_preference(&mut self, track: &TrackSid, preference: Preference) -> Result<bool, String> {
        if !self.preferences.contains_key(track) && self.preferences.len() >= MAX_TRACK_CHOICES {
            return Err(format!("track settings for more than {MAX_TRACK_CHOICES} tracks"));
        }
        Ok(self.preferences.insert(track.clone(), preference) != Some(preference))
    }

    /// The layer preference for `track` ([`Preference::Top`] without settings).
    pub fn preference(&self, track: &TrackSid) -> Preference {
        self.preferences.get(track).copied().unwrap_or_default()
    }

    /// Whether the subscriber disabled `track` (`UpdateTrackSettings{disabled}`).
    pub fn is_disabled(&self, track: &TrackSid) -> bool {
        self.disabled.contains(track)
    }

    /// Records whether the subscriber may have `track`; true when that is news
    /// to it (the first answer counts, as in LiveKit), so a
    /// `SubscriptionPermissionUpdate` is due.
    pub fn permission_changed(&mut self, track: &TrackSid, allowed: bool) -> bool {
        self.told.insert(track.clone(), allowed) != Some(allowed)
    }

    /// The generation of the next down-track of `track`: 0 for the first, one
    /// more for each after it.
    pub fn next_generation(&mut self, track: &TrackSid) -> usize {
        let n = self.generations.entry(track.clone()).or_insert(0);
        let this = *n;
        *n = n.saturating_add(1);
        this
    }

    /// Forgets `track` (it was unpublished).
    pub fn forget(&mut self, track: &TrackSid) {
        self.explicit.remove(track);
        self.disabled.remove(track);
        self.preferences.remove(track);
        self.told.remove(track);
        self.generations.remove(track);
    }
}

/// Which of a publisher's tracks one subscriber may have.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    AllTracks,
    Tracks(HashSet<TrackSid>),
}

/// Who may subscribe to one publisher's tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions(Option<HashMap<ParticipantIdentity, Allowed>>);

/// Why a `SubscriptionPermission` was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// An entry names neither a participant identity nor a known sid (LiveKit's
    /// `ErrSubscriptionPermissionNeedsId`); the permissions stay as they were.
    #[error("a track permission names no participant")]
    NeedsId,
    /// Over [`MAX_PERMISSION_ENTRIES`] or [`MAX_PERMISSION_TRACKS`]: the client's
    /// fault, and its connection closes.
    #[error("{0}")]
    TooLarge(String),
}

impl Permissions {
    /// Everyone may subscribe to everything: before any `SubscriptionPermission`.
    pub fn everyone() -> Self {
        Self(None)
    }

    /// The permissions a `SubscriptionPermission` sets; they replace all earlier
    /// ones. `all_participants` allows everyone. Otherwise each entry is keyed by
    /// `participant_identity`, else by the identity `identity_of` finds for
    /// `participant_sid`; an entry for a sid nobody has is skipped, as LiveKit does.
    pub fn from_proto(
        req: &proto::SubscriptionPermission,
        identity_of: impl Fn(&str) -> Option<ParticipantIdentity>,
    ) -> Result<Self, PermissionError> {
        if req.all_participants {
            return Ok(Self::everyone());
        }
        if req.track_permissions.len() > MAX_PERMISSION_ENTRIES {
            return Err(PermissionError::TooLarge(format!(
                "SubscriptionPermission with {} entries (at most {MAX_PERMISSION_ENTRIES})",
                req.track_permissions.len()
            )));
        }
        let mut by_identity = HashMap::new();
        for entry in &req.track_permissions {
            if entry.track_sids.len() > MAX_PERMISSION_TRACKS {
                return Err(PermissionError::TooLarge(format!(
                    "TrackPermission with {} tracks (at most {MAX_PERMISSION_TRACKS})",
                    entry.track_sids.len()
                )));
            }
            let identity = match (entry.participant_identity.as_str(), entry.participant_sid.as_str()) {
                ("", "") => return Err(PermissionError::NeedsId),
                ("", sid) => match identity_of(sid) {
                    Some(identity) => identity,
                    None => {
                        tracing::debug!(%sid, "track permission for a participant not in the room skipped");
                        continue;
                    }
                },
                (identity, _) => ParticipantIdentity::from(identity),
            };
            let allowed = if entry.all_tracks {
                Allowed::AllTracks
            } else {
                Allowed::Tracks(entry.track_sids.iter().map(|t| TrackSid::new(t.as_str())).collect())
            };
            by_identity.insert(identity, allowed);
        }
        Ok(Self(Some(by_identity)))
    }

    /// Whether the participant `identity` may subscribe to `track`.
    pub fn allows(&self, identity: &ParticipantIdentity, track: &TrackSid) -> bool {
        match &self.0 {
            None => true,
            Some(by_identity) => match by_identity.get(identity) {
                None => false,
                Some(Allowed::AllTracks) => true,
                Some(Allowed::Tracks(tracks)) => tracks.contains(track),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sids(names: &[&str]) -> HashSet<TrackSid> {
        names.iter().map(|n| TrackSid::new(*n)).collect()
    }

    #[test]
    fn explicit_choices_override_auto_subscribe_until_the_track_is_forgotten() {
        let (a, b) = (TrackSid::new("TR_a"), TrackSid::new("TR_b"));
        let mut off = Choices::new(false);
        assert!(!off.wants(&a), "auto_subscribe=0 wants nothing");
        off.choose(&sids(&["TR_a"]), true).unwrap();
        assert!(off.wants(&a) && !off.wants(&b));
        let mut on = Choices::new(true);
        assert!(on.wants(&a), "auto_subscribe wants everything");
        on.choose(&sids(&["TR_a"]), false).unwrap();
        assert!(!on.wants(&a) && on.wants(&b));
        on.forget(&a);
        assert!(on.wants(&a), "an unpublished track's choice goes with it");
    }

    #[test]
    fn choices_and_settings_are_bounded() {
        let mut c = Choices::new(true);
        let many: HashSet<TrackSid> =
            (0..MAX_TRACK_CHOICES).map(|i| TrackSid::new(format!("TR_{i}").as_str())).collect();
        c.choose(&many, true).unwrap();
        c.choose(&many, false).unwrap(); // the same tracks again cost nothing
        assert!(c.choose(&sids(&["TR_one_more"]), true).is_err());
        assert!(c.wants(&TrackSid::new("TR_one_more")), "a refused choice changes nothing");
        for t in &many {
            assert!(c.set_disabled(t, true).unwrap());
        }
        assert!(!c.set_disabled(&TrackSid::new("TR_0"), true).unwrap(), "no change");
        assert!(c.set_disabled(&TrackSid::new("TR_one_more"), true).is_err());
        assert!(c.set_disabled(&TrackSid::new("TR_0"), false).unwrap());
        assert!(!c.is_disabled(&TrackSid::new("TR_0")));
    }

    #[test]
    fn a_permission_update_is_due_on_the_first_answer_and_each_change() {
        let mut c = Choices::new(true);
        let t = TrackSid::new("TR_a");
        assert!(c.permission_changed(&t, true), "the first answer is news");
        assert!(!c.permission_changed(&t, true));
        assert!(c.permission_changed(&t, false));
        assert!(c.permission_changed(&t, true));
    }

    #[test]
    fn permissions_replace_each_other_and_key_by_identity_else_sid() {
        let (bob, carol) = (ParticipantIdentity::from("bob"), ParticipantIdentity::from("carol"));
        let (a, b) = (TrackSid::new("TR_a"), TrackSid::new("TR_b"));
        assert!(Permissions::everyone().allows(&bob, &a));
        let req = proto::SubscriptionPermission {
            all_participants: false,
            track_permissions: vec![
                proto::TrackPermission { participant_identity: "bob".into(), all_tracks: true, ..Default::default() },
                proto::TrackPermission {
                    participant_sid: "PA_carol".into(),
                    track_sids: vec!["TR_b".into()],
                    ..Default::default()
                },
                proto::TrackPermission { participant_sid: "PA_gone".into(), all_tracks: true, ..Default::default() },
            ],
        };
        let identity_of = |sid: &str| (sid == "PA_carol").then(|| ParticipantIdentity::from("carol"));
        let p = Permissions::from_proto(&req, identity_of).unwrap();
        assert!(p.allows(&bob, &a) && p.allows(&bob, &b));
        assert!(!p.allows(&carol, &a) && p.allows(&carol, &b));
        assert!(!p.allows(&ParticipantIdentity::from("dave"), &a), "not listed, not allowed");

        let nobody = proto::SubscriptionPermission { all_participants: false, track_permissions: vec![] };
        assert!(!Permissions::from_proto(&nobody, identity_of).unwrap().allows(&bob, &a));
        let everyone = proto::SubscriptionPermission { all_participants: true, track_permissions: vec![] };
        assert_eq!(Permissions::from_proto(&everyone, identity_of).unwrap(), Permissions::everyone());

        let anonymous = proto::SubscriptionPermission {
            all_participants: false,
            track_permissions: vec![proto::TrackPermission { all_tracks: true, ..Default::default() }],
        };
        assert_eq!(Permissions::from_proto(&anonymous, identity_of), Err(PermissionError::NeedsId));
        let huge = proto::SubscriptionPermission {
            all_participants: false,
            track_permissions: vec![proto::TrackPermission::default(); MAX_PERMISSION_ENTRIES + 1],
        };
        assert!(matches!(Permissions::from_proto(&huge, identity_of), Err(PermissionError::TooLarge(_))));
    }
}
