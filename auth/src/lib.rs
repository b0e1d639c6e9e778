//! LiveKit access tokens, as Meridian mints and checks them.
//!
//! A join token is a LiveKit access token: an HS256 JWT whose `iss` is the API key,
//! `sub` the participant identity, and whose `video` claim carries the grants
//! (LiveKit `VideoGrant`, <https://docs.livekit.io/home/get-started/authentication/>).
//! Minting and signature checks are the `livekit-api` crate's (`access-token`
//! feature); this crate adds what Meridian needs around them:
//!
//! - [`TokenAuthority::mint`] makes a token from a [`MintRequest`] and reports its id
//!   and expiry, so the gateway can record it;
//! - [`TokenAuthority::verify_join`] turns a presented token into a [`VerifiedGrant`],
//!   the proof type that a join was authorised, or a [`TokenError`] saying why not;
//! - [`TokenAuthority::check_api_auth`] checks server-API credentials (HTTP Basic with
//!   key and secret, or LiveKit's `Authorization: Bearer <JWT>`).
//!
//! Expiry and not-before are checked with a 60 s leeway, as LiveKit's server does.
//!
//! [`turn_rest`] holds the other credential Meridian hands out: TURN REST API
//! username/password pairs, minted by the SFU per join and checked by the relay.

pub mod turn_rest;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::prelude::{Engine, BASE64_STANDARD};
use jsonwebtoken::errors::ErrorKind;
use livekit_api::access_token::{AccessToken, AccessTokenError, Claims, TokenVerifier, VideoGrants};
use meridian_ids::{ParticipantIdentity, RoomName};
use sha1::{Digest, Sha1};

/// The time `secs` seconds after the Unix epoch, or `None` when `SystemTime`
/// cannot hold it (over `i64::MAX` seconds on Linux). Every time read off the wire
/// (JWT `exp`/`nbf`, TURN usernames and nonces) goes through this:
/// the unchecked `SystemTime` addition panics on such values.
pub fn unix_time(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Default token lifetime: 6 hours, as LiveKit's SDKs mint them.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// Longest lifetime a minted token may ask for: 30 days.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a participant may do in its room (the subset of LiveKit's `VideoGrant`
/// that Meridian records and enforces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// May publish tracks (`canPublish`, default true).
    pub can_publish: bool,
    /// May subscribe to others' tracks (`canSubscribe`, default true).
    pub can_subscribe: bool,
    /// May send data messages (`canPublishData`, default true).
    pub can_publish_data: bool,
    /// Invisible to other participants (`hidden`, default false).
    pub hidden: bool,
    /// May administer the room (`roomAdmin`, default false).
    pub room_admin: bool,
    /// Sources that may be published (`canPublishSources`, default every
    /// source). Only with `can_publish`; see [`Grants::can_publish_source`].
    pub can_publish_sources: PublishSources,
    /// May change its own name, metadata and attributes with LiveKit's
    /// `UpdateParticipantMetadata` (`canUpdateOwnMetadata`, default false).
    pub can_update_own_metadata: bool,
}

impl Default for Grants {
    /// Publish (any source), subscribe and data, as LiveKit grants when the
    /// fields are absent.
    fn default() -> Self {
        Self {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            hidden: false,
            room_admin: false,
            can_publish_sources: PublishSources::ANY,
            can_update_own_metadata: false,
        }
    }
}

impl Grants {
    /// Whether a track of `source` (LiveKit `TrackSource`, as on the wire) may be
    /// published: `can_publish`, and the source listed in `canPublishSources`
    /// when the token lists any (LiveKit's `VideoGrant.GetCanPublishSource`).
    pub fn can_publish_source(&self, source: i32) -> bool {
        self.can_publish && self.can_publish_sources.allows(source)
    }
}

/// A set of LiveKit `TrackSource`s: what `canPublishSources` lists. A token that
/// lists none may publish every source ([`PublishSources::ANY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSources(u8);

impl PublishSources {
    /// Every source: the grant lists none.
    pub const ANY: Self = Self(u8::MAX);
    /// The sources LiveKit names (`TrackSource`, lower case): `unknown`,
    /// `camera`, `microphone`, `screen_share`, `screen_share_audio`.
    pub const NAMES: [&'static str; 5] = ["unknown", "camera", "microphone", "screen_share", "screen_share_audio"];

    /// The set a token's `canPublishSources` names: [`PublishSources::ANY`] for an
    /// empty list. A name LiveKit does not know counts as `unknown`, as in
    /// LiveKit's `sourceToProto`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        if names.is_empty() {
            return Self::ANY;
        }
        Self(names.iter().fold(0, |set, name| {
            let at = Self::NAMES.iter().position(|n| n.eq_ignore_ascii_case(name.as_ref())).unwrap_or(0);
            set | 1 << at
        }))
    }

    /// Whether `source` (a `TrackSource` value off the wire, any `i32`) is in the set.
    pub fn allows(self, source: i32) -> bool {
        self == Self::ANY || usize::try_from(source).is_ok_and(|at| at < Self::NAMES.len() && self.0 & 1 << at != 0)
    }

    /// The sources as LiveKit's `ParticipantPermission.can_publish_sources`
    /// lists them: empty for [`PublishSources::ANY`].
    pub fn to_proto(self) -> Vec<i32> {
        if self == Self::ANY {
            return Vec::new();
        }
        (0..Self::NAMES.len() as i32).filter(|&s| self.allows(s)).collect()
    }

    /// The set `ParticipantPermission.can_publish_sources` lists (`TrackSource`
    /// values): [`PublishSources::ANY`] for none; values LiveKit does not name
    /// count as `unknown`.
    pub fn from_proto(sources: &[i32]) -> Self {
        if sources.is_empty() {
            return Self::ANY;
        }
        Self(sources.iter().fold(0, |set, &s| {
            let at = usize::try_from(s).ok().filter(|&at| at < Self::NAMES.len()).unwrap_or(0);
            set | 1 << at
        }))
    }

    /// The names, as a token's `canPublishSources` carries them (empty for ANY).
    pub fn names(self) -> Vec<String> {
        self.to_proto().into_iter().map(|s| Self::NAMES[s as usize].to_owned()).collect()
    }
}

/// A request to mint a join token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Room the token admits to (`video.room`).
    pub room: RoomName,
    /// Participant identity (`sub`).
    pub identity: ParticipantIdentity,
    /// Display name (`name`), may be empty.
    pub name: String,
    /// Participant metadata (`metadata`), may be empty.
    pub metadata: String,
    /// Lifetime from now; at most [`MAX_TOKEN_TTL`].
    pub ttl: Duration,
    /// Grants in the room.
    pub grants: Grants,
}

/// A minted token and what the store records of it.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The signed JWT to hand to the client.
    pub jwt: String,
    /// Stable id derived from the JWT ([`token_id`]).
    pub id: String,
    /// The JWT `nbf`, taken as its issue time.
    pub issued_at: SystemTime,
    /// The JWT `exp`.
    pub expires_at: SystemTime,
}

/// A join that the token verifier allowed. Only [`TokenAuthority::verify_join`]
/// makes one, so holding it proves the check happened.
#[derive(Debug, Clone)]
pub struct VerifiedGrant {
    identity: ParticipantIdentity,
    name: String,
    metadata: String,
    attributes: HashMap<String, String>,
    room: RoomName,
    grants: Grants,
    expires_at: SystemTime,
}

impl VerifiedGrant {
    /// Participant identity (JWT `sub`).
    pub fn identity(&self) -> &ParticipantIdentity {
        &self.identity
    }
    /// Display name (JWT `name`), may be empty.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Participant metadata (JWT `metadata`), may be empty.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }
    /// Participant attributes (JWT `attributes`), may be empty.
    pub fn attributes(&self) -> &HashMap<String, String> {
        &self.attributes
    }
    /// Room the token admits to (`video.room`).
    pub fn room(&self) -> &RoomName {
        &self.room
    }
    /// Grants in the room.
    pub fn grants(&self) -> Grants {
        self.grants
    }
    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// What a verified server-API token allows: the admin part of LiveKit's
/// `VideoGrant` (`roomCreate`, `roomList`, `roomAdmin` with its `room`), which
/// `pkg/service/auth.go`'s `Ensure*Permission` check per RoomService method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGrant {
    /// May create and delete rooms (`roomCreate`).
    pub room_create: bool,
    /// May list rooms (`roomList`).
    pub room_list: bool,
    /// May administer `room` (`roomAdmin`).
    pub room_admin: bool,
    /// The room `room_admin` applies to (`room`), may be empty.
    pub room: RoomName,
}

impl ServerGrant {
    /// Whether it administers `room` (LiveKit's `EnsureAdminPermission`).
    pub fn administers(&self, room: &str) -> bool {
        self.room_admin && self.room.as_str() == room
    }
}

/// Why a token or API credential was refused. Every variant is the client's fault;
/// [`TokenError::http_status`] maps it to LiveKit's status for it (401, or 400 for
/// a request that names no identity or room; `pkg/service/auth.go`, `utils.go`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("no access token")]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (LiveKit's
    /// `ErrMissingAuthorization`, word for word).
    #[error("invalid authorization header. Must start with Bearer ")]
    BadAuthorizationHeader,
    /// The token is not a well-formed JWT, or its claims do not decode.
    #[error("invalid token: malformed ({0})")]
    Malformed(String),
    /// The signature does not match the API secret.
    #[error("invalid token: signature does not match")]
    BadSignature,
    /// The token was signed for another API key (`iss`).
    #[error("invalid token: unknown API key")]
    UnknownKey,
    /// The token expired (past `exp`, beyond the leeway).
    #[error("invalid token: expired")]
    Expired,
    /// The token is not valid yet (`nbf` in the future, beyond the leeway).
    #[error("invalid token: not valid yet")]
    NotYetValid,
    /// The token was minted through the API and revoked since (`DELETE
    /// /v1/tokens/{id}`).
    #[error("invalid token: revoked")]
    Revoked,
    /// The token carries no `roomJoin` grant.
    #[error("permission denied: token has no roomJoin grant")]
    NoRoomJoin,
    /// A token to mint names no room or no identity.
    #[error("permission denied: token names no {0}")]
    Incomplete(&'static str),
    /// A join token with an empty identity (`sub`); LiveKit's `ErrIdentityEmpty`.
    #[error("identity cannot be empty")]
    IdentityEmpty,
    /// Neither the join token nor the URL's `room` names a room; LiveKit's
    /// `ErrNoRoomName`.
    #[error("no room name")]
    NoRoomName,
    /// Server-API credentials were missing or wrong.
    #[error("invalid API credentials")]
    BadApiCredentials,
}

impl TokenError {
    /// HTTP status for this refusal, as LiveKit's `/rtc` and `/rtc/validate`
    /// answer it: 400 for a join that names no identity or no room (and a mint
    /// request that does not), 401 for everything else (no, bad or expired token,
    /// no `roomJoin` grant).
    pub fn http_status(&self) -> u16 {
        match self {
            TokenError::IdentityEmpty | TokenError::NoRoomName | TokenError::Incomplete(_) => 400,
            _ => 401,
        }
    }
}

/// Mints and verifies tokens for one API key/secret pair.
#[derive(Clone)]
pub struct TokenAuthority {
    api_key: String,
    api_secret: String,
    verifier: TokenVerifier,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority").field("api_key", &self.api_key).finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// An authority for `api_key` signing with `api_secret`.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            verifier: TokenVerifier::with_api_key(api_key, api_secret),
        }
    }

    /// The API key (the `iss` of every token this authority mints).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Mints a join token.
    ///
    /// Errors: [`TokenError::Incomplete`] when room or identity is empty,
    /// [`TokenError::Malformed`] when the TTL is zero or over [`MAX_TOKEN_TTL`].
    pub fn mint(&self, req: &MintRequest) -> Result<MintedToken, TokenError> {
        if req.room.as_str().is_empty() {
            return Err(TokenError::Incomplete("room"));
        }
        if req.identity.as_str().is_empty() {
            return Err(TokenError::Incomplete("identity"));
        }
        if req.ttl.is_zero() || req.ttl > MAX_TOKEN_TTL {
            return Err(TokenError::Malformed(format!("ttl must be 1..={} seconds", MAX_TOKEN_TTL.as_secs())));
        }
        let grants = VideoGrants {
            room_join: true,
            room: req.room.to_string(),
            room_admin: req.grants.room_admin,
            can_publish: Some(req.grants.can_publish),
            can_subscribe: Some(req.grants.can_subscribe),
            can_publish_data: Some(req.grants.can_publish_data),
            hidden: req.grants.hidden,
            can_publish_sources: req.grants.can_publish_sources.names(),
            can_update_own_metadata: req.grants.can_update_own_metadata.then_some(true),
            ..VideoGrants::default()
        };
        let jwt = AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_identity(req.identity.as_str())
            .with_name(&req.name)
            .with_metadata(&req.metadata)
            .with_ttl(req.ttl)
            .with_grants(grants)
            .to_jwt()
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        // Read the times back from what was signed, so the record matches the token.
        let claims = Claims::from_unverified(&jwt).map_err(|e| TokenError::Malformed(e.to_string()))?;
        Ok(MintedToken {
            id: token_id(&jwt),
            issued_at: claim_time(claims.nbf, "nbf")?,
            expires_at: claim_time(claims.exp, "exp")?,
            jwt,
        })
    }

    /// Verifies a join token: signature, `iss`, expiry and not-before (60 s
    /// leeway), the `roomJoin` grant and an identity. The room is the token's
    /// when it names one, else `url_room` (the `/rtc` URL's `room`), as LiveKit's
    /// `ValidateConnectRequest` decides: a token's room wins over the URL's.
    pub fn verify_join(&self, token: &str, url_room: Option<&str>) -> Result<VerifiedGrant, TokenError> {
        let claims = self.verify(token)?;
        let expires_at = claim_time(claims.exp, "exp")?;
        let video = &claims.video;
        if !video.room_join {
            return Err(TokenError::NoRoomJoin);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::IdentityEmpty);
        }
        let room = match (video.room.as_str(), url_room.unwrap_or("")) {
            ("", "") => return Err(TokenError::NoRoomName),
            ("", from_url) => from_url.to_owned(),
            (from_token, _) => from_token.to_owned(),
        };
        Ok(VerifiedGrant {
            grants: Grants {
                can_publish: video.can_publish(),
                can_subscribe: video.can_subscribe(),
                can_publish_data: video.can_publish_data(),
                hidden: video.hidden,
                room_admin: video.room_admin,
                can_publish_sources: PublishSources::from_names(&video.can_publish_sources),
                can_update_own_metadata: video.can_update_own_metadata.unwrap_or(false),
            },
            identity: claims.sub.into(),
            name: claims.name,
            metadata: claims.metadata,
            attributes: claims.attributes,
            room: room.into(),
            expires_at,
        })
    }

    /// The join token of a `/rtc` or `/rtc/validate` request, where LiveKit's
    /// middleware looks for it (`pkg/service/auth.go`): the `Authorization`
    /// header's `Bearer <token>` when the header is there (LiveKit's Rust-based
    /// SDKs send it), else the `access_token` query parameter (livekit-client).
    ///
    /// Errors: [`TokenError::BadAuthorizationHeader`] for a header of another
    /// scheme, [`TokenError::Missing`] when neither holds a token.
    pub fn join_token<'a>(
        authorization: Option<&'a str>,
        access_token: Option<&'a str>,
    ) -> Result<&'a str, TokenError> {
        let token = match authorization {
            Some(header) => header.strip_prefix("Bearer ").ok_or(TokenError::BadAuthorizationHeader)?,
            None => access_token.unwrap_or(""),
        };
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        Ok(token)
    }

    /// Checks a server-API `Authorization` header value: `Basic base64(key:secret)`
    /// or `Bearer <JWT signed with the secret>` (LiveKit's server API style).
    ///
    /// Errors: [`TokenError::BadApiCredentials`] for a missing or wrong header, or the
    /// JWT's own error for a bearer token that does not verify.
    pub fn check_api_auth(&self, authorization: Option<&str>) -> Result<(), TokenError> {
        let value = authorization.ok_or(TokenError::BadApiCredentials)?.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(TokenError::BadApiCredentials)?;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let decoded = BASE64_STANDARD.decode(rest.trim()).map_err(|_| TokenError::BadApiCredentials)?;
                let expected = format!("{}:{}", self.api_key, self.api_secret);
                if constant_time_eq(&decoded, expected.as_bytes()) {
                    Ok(())
                } else {
                    Err(TokenError::BadApiCredentials)
                }
            }
            "bearer" => self.verify(rest.trim()).map(drop),
            _ => Err(TokenError::BadApiCredentials),
        }
    }

    /// Verifies the server-API token of a LiveKit server-API request (Twirp
    /// services): `Authorization: Bearer <JWT>` signed with the API secret, as
    /// LiveKit's server SDKs send it. Returns what its `video` grant allows.
    ///
    /// Errors: [`TokenError::Missing`] without the header,
    /// [`TokenError::BadAuthorizationHeader`] for another scheme, and the JWT's
    /// own reason when it does not verify.
    pub fn verify_server_token(&self, authorization: Option<&str>) -> Result<ServerGrant, TokenError> {
        let token = Self::join_token(authorization, None)?;
        let video = self.verify(token)?.video;
        Ok(ServerGrant {
            room_create: video.room_create,
            room_list: video.room_list,
            room_admin: video.room_admin,
            room: video.room.into(),
        })
    }

    /// A server-API token carrying `grant`, valid for `ttl`: what LiveKit's
    /// server SDKs send to RoomService, for the gateway's own calls to nodes.
    ///
    /// Errors: [`TokenError::Malformed`] if signing fails.
    pub fn server_token(&self, grant: &ServerGrant, ttl: Duration) -> Result<String, TokenError> {
        let video = VideoGrants {
            room_create: grant.room_create,
            room_list: grant.room_list,
            room_admin: grant.room_admin,
            room: grant.room.to_string(),
            ..VideoGrants::default()
        };
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_ttl(ttl)
            .with_grants(video)
            .to_jwt()
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    /// The `Authorization` of a webhook delivery, as LiveKit signs it: a JWT
    /// whose `sha256` claim is the body's base64 SHA-256 (what
    /// `livekit-server-sdk`'s `WebhookReceiver` checks), valid for 10 minutes.
    ///
    /// Errors: [`TokenError::Malformed`] if signing fails.
    pub fn webhook_token(&self, body_sha256: &str) -> Result<String, TokenError> {
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_ttl(Duration::from_secs(600))
            .with_sha256(body_sha256)
            .to_jwt()
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        self.verifier.verify(token).map_err(classify)
    }
}

/// A JWT time claim (seconds since the epoch) as a time, or
/// [`TokenError::Malformed`] when it is out of range (a signed token can carry any
/// number; `livekit-api` declares the claims `usize`).
fn claim_time(secs: usize, claim: &str) -> Result<SystemTime, TokenError> {
    u64::try_from(secs).ok().and_then(unix_time).ok_or_else(|| TokenError::Malformed(format!("{claim} out of range")))
}

/// Maps the verifier's error to our reason.
fn classify(e: AccessTokenError) -> TokenError {
    match e {
        AccessTokenError::Encoding(e) => match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::UnknownKey,
            _ => TokenError::Malformed(e.to_string()),
        },
        other => TokenError::Malformed(other.to_string()),
    }
}

/// The id under which a token is recorded: `TK_` and the first 12 hex digits of
/// SHA-1 over the JWT. Derived from the token itself, so a presented token can be
/// looked up (for revocation) without a claim of its own.
pub fn token_id(jwt: &str) -> String {
    let digest = Sha1::digest(jwt.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("TK_{hex}")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(room: &str, identity: &str) -> MintRequest {
        MintRequest {
            room: room.into(),
            identity: identity.into(),
            name: "Alice".into(),
            metadata: String::new(),
            ttl: DEFAULT_TOKEN_TTL,
            grants: Grants::default(),
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_grants() {
        let auth = TokenAuthority::new("devkey", "secret");
        let t = auth.mint(&req("demo", "alice")).unwrap();
        let g = auth.verify_join(&t.jwt, None).unwrap();
        assert_eq!((g.identity().as_str(), g.room().as_str(), g.name()), ("alice", "demo", "Alice"));
        assert_eq!(g.grants(), Grants::default());
        let ttl = t.expires_at.duration_since(t.issued_at).unwrap();
        assert_eq!(ttl, DEFAULT_TOKEN_TTL);
        assert_eq!(t.id, token_id(&t.jwt));
    }

    #[test]
    fn publish_sources_and_own_metadata_survive_a_mint_and_verify() {
        let auth = TokenAuthority::new("devkey", "secret");
        let mut r = req("demo", "alice");
        r.grants.can_publish_sources = PublishSources::from_names(&["microphone", "SCREEN_SHARE"]);
        r.grants.can_update_own_metadata = true;
        let g = auth.verify_join(&auth.mint(&r).unwrap().jwt, None).unwrap().grants();
        assert_eq!(g, r.grants);
        assert_eq!(g.can_publish_sources.to_proto(), vec![2, 3]);
        assert!(g.can_publish_source(2) && g.can_publish_source(3));
        assert!(!g.can_publish_source(1) && !g.can_publish_source(-1) && !g.can_publish_source(i32::MAX));
        let any = Grants::default();
        assert!(any.can_publish_source(1) && any.can_publish_source(99), "no list: every source");
        assert!(any.can_publish_sources.to_proto().is_empty());
        let none = Grants { can_publish: false, ..any };
        assert!(!none.can_publish_source(1), "canPublish false wins over the sources");
    }

    #[test]
    fn token_attributes_reach_the_verified_grant() {
        let auth = TokenAuthority::new("devkey", "secret");
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let token = signed(serde_json::json!({
            "iss": "devkey", "sub": "alice", "exp": exp, "attributes": { "role": "host" },
            "video": { "roomJoin": true, "room": "demo", "canUpdateOwnMetadata": true },
        }));
        let g = auth.verify_join(&token, None).unwrap();
        assert_eq!(g.attributes().get("role").map(String::as_str), Some("host"));
        assert!(g.grants().can_update_own_metadata);
    }

    #[test]
    fn wrong_secret_and_wrong_key_are_refused_with_reasons() {
        let t = TokenAuthority::new("devkey", "secret").mint(&req("demo", "alice")).unwrap();
        assert_eq!(
            TokenAuthority::new("devkey", "other").verify_join(&t.jwt, None).unwrap_err(),
            TokenError::BadSignature
        );
        assert_eq!(
            TokenAuthority::new("otherkey", "secret").verify_join(&t.jwt, None).unwrap_err(),
            TokenError::UnknownKey
        );
        assert!(matches!(
            TokenAuthority::new("devkey", "secret").verify_join("abc", None),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(TokenAuthority::new("devkey", "secret").verify_join("", None).unwrap_err(), TokenError::Missing);
    }

    /// A token signed with the right secret but with `exp` (or `nbf`) beyond what
    /// `SystemTime` holds: refused as malformed, no panic.
    #[test]
    fn a_signed_token_with_an_expiry_past_the_end_of_time_is_malformed() {
        let auth = TokenAuthority::new("devkey", "secret");
        // livekit-api installs jsonwebtoken's HMAC provider on first use; signing
        // by hand before that would pin jsonwebtoken's empty default for the process.
        auth.mint(&req("demo", "alice")).unwrap();
        for (exp, nbf) in [(u64::MAX, 0u64), (i64::MAX as u64 + 1, 0)] {
            let claims = serde_json::json!({
                "iss": "devkey", "sub": "alice", "exp": exp, "nbf": nbf,
                "video": { "roomJoin": true, "room": "demo" },
            });
            let jwt = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"secret"),
            )
            .unwrap();
            assert!(matches!(auth.verify_join(&jwt, None), Err(TokenError::Malformed(_))), "exp {exp}");
            assert_eq!(auth.check_api_auth(Some(&format!("Bearer {jwt}"))), Ok(()), "API auth reads no time");
        }
        assert_eq!(unix_time(u64::MAX), None);
        assert_eq!(unix_time(1), UNIX_EPOCH.checked_add(Duration::from_secs(1)));
    }

    /// Signed claims as a test gives them (after a mint, see above).
    fn signed(claims: serde_json::Value) -> String {
        // jsonwebtoken 10 takes its crypto backend from a process-wide provider
        // that livekit-token installs on its first use, and fixes the
        // feature-less one (which panics) if asked first. Tests run in
        // parallel: without this, whichever test signed by hand first failed
        // every test in the process.
        TokenAuthority::new("devkey", "secret").mint(&req("demo", "alice")).expect("installs the provider");
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    /// LiveKit's `ValidateConnectRequest`: the token's room wins over the URL's,
    /// the URL's serves a token without one, and none at all is a 400; so is an
    /// empty identity; no `roomJoin` is a 401.
    #[test]
    fn the_room_comes_from_the_token_else_the_url_as_livekit_decides() {
        let auth = TokenAuthority::new("devkey", "secret");
        let t = auth.mint(&req("demo", "alice")).unwrap();
        assert_eq!(auth.verify_join(&t.jwt, Some("lobby")).unwrap().room(), "demo", "the token's room wins");
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let roomless = signed(serde_json::json!({
            "iss": "devkey", "sub": "alice", "exp": exp, "video": { "roomJoin": true },
        }));
        assert_eq!(auth.verify_join(&roomless, Some("lobby")).unwrap().room(), "lobby", "else the URL's");
        for url_room in [None, Some("")] {
            let err = auth.verify_join(&roomless, url_room).unwrap_err();
            assert_eq!((err.clone(), err.http_status()), (TokenError::NoRoomName, 400));
        }
        let nameless = signed(serde_json::json!({
            "iss": "devkey", "sub": "", "exp": exp, "video": { "roomJoin": true, "room": "demo" },
        }));
        let err = auth.verify_join(&nameless, None).unwrap_err();
        assert_eq!(
            (err.clone(), err.http_status(), err.to_string().as_str()),
            (TokenError::IdentityEmpty, 400, "identity cannot be empty")
        );
        let no_join = signed(serde_json::json!({
            "iss": "devkey", "sub": "alice", "exp": exp, "video": { "room": "demo" },
        }));
        let err = auth.verify_join(&no_join, None).unwrap_err();
        assert_eq!((err.clone(), err.http_status()), (TokenError::NoRoomJoin, 401));
    }

    #[test]
    fn the_join_token_is_the_bearer_header_else_the_access_token_parameter() {
        let join_token = TokenAuthority::join_token;
        assert_eq!(join_token(Some("Bearer abc"), Some("xyz")), Ok("abc"), "the header wins");
        assert_eq!(join_token(None, Some("xyz")), Ok("xyz"));
        assert_eq!(join_token(Some("Basic abc"), Some("xyz")), Err(TokenError::BadAuthorizationHeader));
        assert_eq!(join_token(Some("bearer abc"), None), Err(TokenError::BadAuthorizationHeader), "LiveKit's case");
        assert_eq!(join_token(Some("Bearer "), None), Err(TokenError::Missing));
        assert_eq!(join_token(None, None), Err(TokenError::Missing));
        assert_eq!(TokenError::BadAuthorizationHeader.http_status(), 401);
    }

    #[test]
    fn a_server_token_gives_its_admin_grants_and_only_as_a_bearer_header() {
        let auth = TokenAuthority::new("devkey", "secret");
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let token = signed(serde_json::json!({
            "iss": "devkey", "exp": exp, "video": { "roomAdmin": true, "room": "demo", "roomList": true },
        }));
        let g = auth.verify_server_token(Some(&format!("Bearer {token}"))).unwrap();
        assert!(g.room_list && !g.room_create && g.administers("demo") && !g.administers("other"));
        assert_eq!(auth.verify_server_token(None), Err(TokenError::Missing));
        let basic = format!("Basic {}", BASE64_STANDARD.encode("devkey:secret"));
        assert_eq!(auth.verify_server_token(Some(&basic)), Err(TokenError::BadAuthorizationHeader));
        let own = ServerGrant { room_create: true, room_list: false, room_admin: false, room: RoomName::from("") };
        let minted = auth.server_token(&own, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify_server_token(Some(&format!("Bearer {minted}"))).unwrap(), own);
        let forged = TokenAuthority::new("devkey", "other").mint(&req("demo", "a")).unwrap().jwt;
        assert_eq!(auth.verify_server_token(Some(&format!("Bearer {forged}"))), Err(TokenError::BadSignature));
    }

    #[test]
    fn api_auth_takes_basic_and_bearer() {
        let auth = TokenAuthority::new("devkey", "secret");
        let basic = format!("Basic {}", BASE64_STANDARD.encode("devkey:secret"));
        assert_eq!(auth.check_api_auth(Some(&basic)), Ok(()));
        let wrong = format!("Basic {}", BASE64_STANDARD.encode("devkey:nope"));
        assert_eq!(auth.check_api_auth(Some(&wrong)), Err(TokenError::BadApiCredentials));
        assert_eq!(auth.check_api_auth(None), Err(TokenError::BadApiCredentials));
        let jwt = auth.mint(&req("demo", "server")).unwrap().jwt;
        assert_eq!(auth.check_api_auth(Some(&format!("Bearer {jwt}"))), Ok(()));
        let foreign = TokenAuthority::new("devkey", "other").mint(&req("demo", "x")).unwrap().jwt;
        assert_eq!(auth.check_api_auth(Some(&format!("Bearer {foreign}"))), Err(TokenError::BadSignature));
    }

    #[test]
    fn mint_refuses_empty_room_identity_and_bad_ttl() {
        let auth = TokenAuthority::new("devkey", "secret");
        assert_eq!(auth.mint(&req("", "alice")).unwrap_err(), TokenError::Incomplete("room"));
        assert_eq!(auth.mint(&req("demo", "")).unwrap_err(), TokenError::Incomplete("identity"));
        let mut r = req("demo", "alice");
        r.ttl = Duration::ZERO;
        assert!(matches!(auth.mint(&r), Err(TokenError::Malformed(_))));
    }
}
