//! Twirp v7 (<https://twitchtv.github.io/twirp/docs/spec_v7.html>) as LiveKit's
//! server APIs speak it: `POST /twirp/<package>.<Service>/<Method>` with a
//! protobuf (`application/protobuf`) or JSON (`application/json`, protobuf's
//! JSON mapping) body; the answer comes in the request's encoding, and errors
//! as JSON `{"code": …, "msg": …}` with the HTTP status the spec gives the code.
//!
//! LiveKit's Go SDK sends protobuf, `livekit-server-sdk` (Node) and LiveKit's
//! Python `livekit-api` JSON or protobuf. Messages are `livekit-protocol`'s,
//! whose serde impls are pbjson's: camelCase out, camelCase or snake_case in,
//! 64-bit integers as strings.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The path prefix of every Twirp route.
pub const PREFIX: &str = "/twirp/";

/// A request body's encoding, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/protobuf` (or `application/x-protobuf`).
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names (parameters such as `charset` are
    /// ignored), or `None` for one Twirp does not speak.
    pub fn of(content_type: Option<&str>) -> Option<Self> {
        let media = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match media.as_str() {
            "application/protobuf" | "application/x-protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/protobuf",
            Encoding::Json => "application/json",
        }
    }

    /// Decodes a request body. Errors: [`Code::Malformed`] with the decoder's reason.
    pub fn decode<T: prost::Message + Default + DeserializeOwned>(self, body: &[u8]) -> Result<T, TwirpError> {
        match self {
            Encoding::Protobuf => T::decode(body).map_err(|e| TwirpError::malformed(format!("protobuf: {e}"))),
            // An empty JSON body is the empty message, as Twirp's Go server takes it.
            Encoding::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
            Encoding::Json => serde_json::from_slice(body).map_err(|e| TwirpError::malformed(format!("json: {e}"))),
        }
    }

    /// Encodes an answer.
    pub fn encode<T: prost::Message + Serialize>(self, message: &T) -> Vec<u8> {
        match self {
            Encoding::Protobuf => message.encode_to_vec(),
            // pbjson's impls only fail on a map key that is not a string, which
            // protobuf cannot express; an empty object stands in, never a panic.
            Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }
}

/// Twirp's error codes (spec v7, "Error codes"), those LiveKit's services use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400: the request names something invalid.
    InvalidArgument,
    /// 400: the body does not decode.
    Malformed,
    /// 404: no such method (or service).
    BadRoute,
    /// 404: the room, participant or track does not exist.
    NotFound,
    /// 409: it exists already.
    AlreadyExists,
    /// 403: authenticated, but not allowed.
    PermissionDenied,
    /// 401: no or bad credentials, or grants that do not cover the call
    /// (LiveKit answers missing grants with this too).
    Unauthenticated,
    /// 429: a limit is reached (e.g. the room is full).
    ResourceExhausted,
    /// 412: the system is not in a state for this.
    FailedPrecondition,
    /// 501: not implemented.
    Unimplemented,
    /// 500: our fault.
    Internal,
    /// 503: a dependency (the store, the room's node) is down; a retry may help.
    Unavailable,
}

impl Code {
    /// The code as Twirp's JSON writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Malformed => "malformed",
            Code::BadRoute => "bad_route",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::Unauthenticated => "unauthenticated",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the spec maps the code to.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::Malformed => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::BadRoute | Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::FailedPrecondition => 412,
            Code::ResourceExhausted => 429,
            Code::Internal => 500,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
        }
    }
}

/// A Twirp error: code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {msg}", code.as_str())]
pub struct TwirpError {
    /// The code.
    pub code: Code,
    /// What went wrong, for the caller.
    pub msg: String,
}

impl TwirpError {
    /// An error of `code` saying `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into() }
    }

    /// [`Code::Malformed`].
    pub fn malformed(msg: impl Into<String>) -> Self {
        Self::new(Code::Malformed, msg)
    }

    /// The JSON body: `{"code": "...", "msg": "..."}` (Content-Type
    /// `application/json`, whatever the request's encoding).
    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({ "code": self.code.as_str(), "msg": self.msg }).to_string().into_bytes()
    }
}

/// The method of a Twirp path for `service` (e.g. `livekit.RoomService`):
/// `/twirp/livekit.RoomService/ListRooms` gives `Some("ListRooms")`.
pub fn method<'a>(path: &'a str, service: &str) -> Option<&'a str> {
    let method = path.strip_prefix(PREFIX)?.strip_prefix(service)?.strip_prefix('/')?;
    (!method.is_empty() && !method.contains('/')).then_some(method)
}

/// A Twirp request as it came: what a handler needs, and what forwarding it
/// needs.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method (`ListRooms`).
    pub method: String,
    /// The body's encoding, which the answer uses too.
    pub encoding: Encoding,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body, at most the reader's limit.
    pub body: Bytes,
}

impl Call {
    /// Reads a request for `service` with a body of at most `max_body` bytes.
    ///
    /// Errors (the answer to send): `bad_route` for another path, a method
    /// other than POST or a Content-Type Twirp does not speak; `malformed` for
    /// a body that cannot be read or is over `max_body`.
    pub async fn read(
        req: hyper::Request<hyper::body::Incoming>,
        service: &str,
        max_body: usize,
    ) -> Result<Self, TwirpError> {
        let path = req.uri().path();
        let Some(method) = method(path, service).map(str::to_owned) else {
            return Err(TwirpError::new(Code::BadRoute, format!("no handler for path {path}")));
        };
        if req.method() != hyper::Method::POST {
            return Err(TwirpError::new(Code::BadRoute, "Twirp takes POST only"));
        }
        let header = |name| req.headers().get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
        let Some(encoding) = Encoding::of(header(hyper::header::CONTENT_TYPE)) else {
            return Err(TwirpError::new(
                Code::BadRoute,
                "unsupported Content-Type (application/json or application/protobuf)",
            ));
        };
        let authorization = header(hyper::header::AUTHORIZATION).map(str::to_owned);
        let body = match Limited::new(req.into_body(), max_body).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(TwirpError::malformed(format!("body: {e}"))),
        };
        Ok(Self { method, encoding, authorization, body })
    }
}

/// An HTTP answer of `status` with `body` as `content_type`.
pub fn answer(status: u16, content_type: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The HTTP answer for `e`: its status and Twirp error JSON.
pub fn refusal(e: &TwirpError) -> hyper::Response<Full<Bytes>> {
    answer(e.code.http_status(), "application/json", e.body().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol as proto;

    #[test]
    fn both_encodings_round_trip_and_json_takes_either_case() {
        let req = proto::ListParticipantsRequest { room: "demo".into() };
        for enc in [Encoding::Protobuf, Encoding::Json] {
            let back: proto::ListParticipantsRequest = enc.decode(&enc.encode(&req)).unwrap();
            assert_eq!(back, req);
        }
        let snake: proto::MuteRoomTrackRequest =
            Encoding::Json.decode(br#"{"room":"r","identity":"a","track_sid":"TR_x","muted":true}"#).unwrap();
        let camel: proto::MuteRoomTrackRequest =
            Encoding::Json.decode(br#"{"room":"r","identity":"a","trackSid":"TR_x","muted":true}"#).unwrap();
        assert_eq!(snake, camel);
        assert_eq!(snake.track_sid, "TR_x");
        let room = proto::Room { creation_time: 1_700_000_000, ..Default::default() };
        let json = String::from_utf8(Encoding::Json.encode(&room)).unwrap();
        assert!(json.contains(r#""creationTime":"1700000000""#), "int64 as a string, camelCase: {json}");
        let empty: proto::ListRoomsRequest = Encoding::Json.decode(b"").unwrap();
        assert_eq!(empty, proto::ListRoomsRequest::default());
    }

    #[test]
    fn bad_bodies_and_unknown_types_are_refused() {
        let err = Encoding::Json.decode::<proto::ListRoomsRequest>(b"{not json").unwrap_err();
        assert_eq!((err.code, err.code.http_status()), (Code::Malformed, 400));
        assert!(Encoding::Protobuf.decode::<proto::ListRoomsRequest>(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(Encoding::of(Some("application/json; charset=utf-8")), Some(Encoding::Json));
        assert_eq!(Encoding::of(Some("Application/Protobuf")), Some(Encoding::Protobuf));
        assert_eq!(Encoding::of(Some("text/plain")), None);
        assert_eq!(Encoding::of(None), None);
        let body: serde_json::Value =
            serde_json::from_slice(&TwirpError::new(Code::NotFound, "requested room does not exist").body()).unwrap();
        assert_eq!(body, serde_json::json!({ "code": "not_found", "msg": "requested room does not exist" }));
    }

    #[test]
    fn the_method_is_the_last_path_segment_of_the_service() {
        assert_eq!(method("/twirp/livekit.RoomService/ListRooms", "livekit.RoomService"), Some("ListRooms"));
        assert_eq!(method("/twirp/livekit.RoomService/", "livekit.RoomService"), None);
        assert_eq!(method("/twirp/livekit.RoomService/a/b", "livekit.RoomService"), None);
        assert_eq!(method("/twirp/livekit.Egress/ListEgress", "livekit.RoomService"), None);
        assert_eq!(method("/v1/rooms", "livekit.RoomService"), None);
    }
}
