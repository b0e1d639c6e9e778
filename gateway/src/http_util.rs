//! Small response and request helpers shared by the routes.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

/// Response body type of every route.
pub type Body = Full<Bytes>;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
}

fn with_type(status: u16, content_type: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    // Status codes used here are all valid, so `from_u16` cannot fail; fall back to 500.
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A plain-text response.
pub fn text(status: u16, body: &str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", full(body.to_owned()))
}

/// An HTML response with status 200.
pub fn html(body: &'static str) -> Response<Body> {
    with_type(200, "text/html; charset=utf-8", full(body))
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    with_type(status, "application/json", full(value.to_string()))
}

/// A JSON error `{"error": message}`.
pub fn json_error(status: u16, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The decoded query string of a request URI (last value wins).
pub fn query(uri: &hyper::Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}
