//! LiveKit's webhooks (`webhook.urls`), through a durable outbox in the store.
//!
//! Events happen on the node: `room_started`, `room_finished`,
//! `participant_joined` (once a PC is connected), `participant_left`,
//! `participant_connection_aborted` (left before any PC connected),
//! `track_published`, `track_unpublished`. [`Webhooks::emit`] builds LiveKit's
//! `WebhookEvent` (a unique `id` `EV_…`, `created_at` in Unix seconds) and
//! queues it; [`run`] writes the queue to the store's outbox in order, one
//! delivery per URL, and delivers the outbox.
//!
//! Delivery is LiveKit's: `POST` of the event as protobuf JSON, `Content-Type:
//! application/webhook+json`, `Authorization:` a JWT (no `Bearer`) signed with
//! the API secret whose `sha256` claim is the body's base64 SHA-256, so
//! `livekit-server-sdk`'s `WebhookReceiver` verifies it. Better than LiveKit's
//! fire-and-forget: the outbox is in Postgres (memory in `meridian dev`), so
//! events survive a node restart (any node delivers them); each URL gets a
//! room's events in order, one at a time; a failed attempt (no 2xx within
//! [`ATTEMPT_TIMEOUT`]) is retried after 1 s, doubling to 60 s, for at most
//! [`RETRY_FOR`] after the event, then given up and counted.
//!
//! URLs are `http://` or `https://`. HTTPS verifies the receiver's certificate
//! against the system's trust store (`/etc/ssl/certs`), or the PEM file named by
//! `SSL_CERT_FILE` (or the directory `SSL_CERT_DIR`) when set, as OpenSSL does:
//! the way to trust a private CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::prelude::{Engine, BASE64_STANDARD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use livekit_protocol as proto;
use meridian_auth::TokenAuthority;
use meridian_schema::{Store, WebhookRecord};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::metrics::WebhookMetrics;

/// Events a node holds on their way to the store; past this (the store is down
/// for long), new events are dropped and counted.
pub const QUEUE: usize = 10_000;
/// How long one claimed delivery is this node's before another may take it.
pub const LEASE: Duration = Duration::from_secs(30);
/// Longest one attempt may take: connect, send, answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the event attempts go on before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(600);
/// How often an idle delivery loop looks at the outbox again.
pub const POLL: Duration = Duration::from_millis(200);

/// The delay before attempt `attempts + 1`: 1 s, doubling, at most 60 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The node's handle for emitting events; a no-op without URLs.
#[derive(Clone)]
pub struct Webhooks {
    urls: Arc<[String]>,
    tx: mpsc::Sender<proto::WebhookEvent>,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl Webhooks {
    /// Webhooks to `urls`, and the queue [`run`] drains.
    pub fn new(urls: Vec<String>, metrics: &WebhookMetrics) -> (Self, mpsc::Receiver<proto::WebhookEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { urls: urls.into(), tx, dropped: metrics.dropped.clone() }, rx)
    }

    /// Emits LiveKit event `event` (e.g. `room_started`) about `room`, and the
    /// participant and track it concerns.
    pub fn emit(
        &self,
        event: &str,
        room: proto::Room,
        participant: Option<proto::ParticipantInfo>,
        track: Option<proto::TrackInfo>,
    ) {
        if self.urls.is_empty() {
            return;
        }
        let created_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let e = proto::WebhookEvent {
            event: event.into(),
            room: Some(room),
            participant,
            track,
            id: meridian_ids::EventId::random().into_string(),
            created_at,
            ..Default::default()
        };
        if self.tx.try_send(e).is_err() {
            self.dropped.inc();
            tracing::warn!(event, "webhook queue full (is the store down?): event dropped");
        }
    }
}

/// Writes `events` to the outbox in order (waiting out store errors), and
/// delivers the outbox, until `shutdown` resolves. Deliveries are signed by
/// `authority`.
pub async fn run(
    store: Arc<dyn Store>,
    authority: TokenAuthority,
    urls: Vec<String>,
    mut events: mpsc::Receiver<proto::WebhookEvent>,
    metrics: WebhookMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let enqueue = async {
        while let Some(event) = events.recv().await {
            let body = serde_json::to_string(&event).unwrap_or_default();
            let room = event.room.as_ref().map(|r| r.name.clone()).unwrap_or_default();
            let created_at =
                u64::try_from(event.created_at).ok().and_then(meridian_auth::unix_time).unwrap_or_else(SystemTime::now);
            for (i, url) in urls.iter().enumerate() {
                let record = WebhookRecord {
                    id: format!("{}@{i}", event.id),
                    url: url.clone(),
                    room: room.as_str().into(),
                    body: body.clone(),
                    created_at,
                    attempts: 0,
                };
                // In order: the next event waits until this one is stored.
                let mut wait = Duration::from_millis(100);
                while let Err(e) = store.enqueue_webhook(&record).await {
                    tracing::warn!(error = %e, "webhook not stored yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    };
    let deliver = async {
        loop {
            match store.webhook_depth().await {
                Ok(n) => {
                    metrics.queue.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                Err(e) => tracing::debug!(error = %e, "webhook queue depth not read"),
            }
            match store.claim_webhook(SystemTime::now(), LEASE).await {
                Ok(Some(delivery)) => attempt(&*store, &authority, &metrics, delivery).await,
                Ok(None) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::debug!(error = %e, "webhook outbox not read");
                    tokio::time::sleep(POLL * 5).await;
                }
            }
        }
    };
    tokio::select! {
        _ = enqueue => {}
        _ = deliver => {}
        _ = shutdown => {}
    }
}

/// One attempt at `delivery`: done when the receiver answers 2xx; else retried
/// with [`backoff`], or given up past [`RETRY_FOR`].
async fn attempt(store: &dyn Store, authority: &TokenAuthority, metrics: &WebhookMetrics, delivery: WebhookRecord) {
    let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, post(authority, &delivery)).await;
    let outcome = match sent {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
    };
    let result = match outcome {
        Ok(()) => {
            metrics.delivered.inc();
            store.webhook_done(&delivery.id).await
        }
        Err(why) => {
            metrics.failures.inc();
            let age = SystemTime::now().duration_since(delivery.created_at).unwrap_or_default();
            if age >= RETRY_FOR {
                metrics.dropped.inc();
                tracing::warn!(id = %delivery.id, url = %delivery.url, %why, attempts = delivery.attempts, "webhook given up");
                store.webhook_done(&delivery.id).await
            } else {
                tracing::info!(id = %delivery.id, url = %delivery.url, %why, attempts = delivery.attempts, "webhook attempt failed");
                let now = SystemTime::now();
                store.webhook_retry(&delivery.id, now.checked_add(backoff(delivery.attempts)).unwrap_or(now)).await
            }
        }
    };
    if let Err(e) = result {
        // The lease runs out and the delivery is tried again: at least once.
        tracing::warn!(id = %delivery.id, error = %e, "webhook outcome not stored");
    }
}

/// TLS settings for `https://` receivers, built on first use: the trust store
/// loaded once (see the module doc), HTTP/1.1 over ALPN. `None` (logged) when
/// no root certificate could be loaded.
fn tls_client() -> Option<tokio_rustls::TlsConnector> {
    static CLIENT: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "a trusted certificate for https:// webhooks did not load");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                tracing::error!(ignored, "no trusted certificate for https:// webhooks: they will fail");
                return None;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// POSTs `delivery` as LiveKit does; returns the receiver's status.
async fn post(authority: &TokenAuthority, delivery: &WebhookRecord) -> Result<u16, String> {
    let uri: hyper::Uri = delivery.url.parse().map_err(|e| format!("url {:?}: {e}", delivery.url))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("url {:?}: only http:// and https:// are supported", delivery.url)),
    };
    let host = uri.host().ok_or_else(|| format!("url {:?} has no host", delivery.url))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // An IPv6 literal comes bracketed.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let digest = BASE64_STANDARD.encode(Sha256::digest(delivery.body.as_bytes()));
    let jwt = authority.webhook_token(&digest).map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, uri.authority().map(|a| a.as_str()).unwrap_or(host))
        .header(hyper::header::CONTENT_TYPE, "application/webhook+json")
        .header(hyper::header::AUTHORIZATION, jwt)
        .body(Full::new(Bytes::from(delivery.body.clone())))
        .map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect((bare, port)).await.map_err(|e| format!("connect: {e}"))?;
    if !tls {
        return send(stream, req).await;
    }
    let connector = tls_client().ok_or("https: no trusted certificates loaded")?;
    let name = rustls::pki_types::ServerName::try_from(bare.to_owned()).map_err(|e| format!("https: {host}: {e}"))?;
    let stream = connector.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
    send(stream, req).await
}

/// Sends `req` over `stream` (HTTP/1.1) and reads the answer out.
async fn send<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    // Read the answer out so the connection closes cleanly; its content is not ours.
    let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX).as_secs(), 60);
        assert_eq!(backoff(0).as_secs(), 1);
    }

    fn authority() -> TokenAuthority {
        TokenAuthority::new("key", "secret-for-the-webhook-test-0123456789")
    }

    /// A delivery of an empty event to `url`.
    fn delivery(url: String) -> WebhookRecord {
        WebhookRecord {
            id: "EV_test".into(),
            url,
            room: meridian_ids::RoomName::new("r"),
            body: "{}".into(),
            created_at: SystemTime::now(),
            attempts: 0,
        }
    }

    /// An `https://` receiver whose certificate no trusted CA signed is never
    /// sent the event: the attempt fails in the TLS handshake.
    #[tokio::test]
    async fn an_https_receiver_with_an_untrusted_certificate_gets_nothing() {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.is_ok()
        });
        let sent = post(&authority(), &delivery(format!("https://127.0.0.1:{port}/hook"))).await;
        assert!(sent.as_ref().is_err_and(|e| e.starts_with("TLS")), "refused in the handshake: {sent:?}");
        assert!(!server.await.unwrap(), "the receiver saw no completed handshake");
    }

    #[tokio::test]
    async fn other_schemes_are_refused_with_the_reason() {
        let sent = post(&authority(), &delivery("ftp://127.0.0.1/hook".into())).await;
        assert!(sent.as_ref().is_err_and(|e| e.contains("only http:// and https://")), "{sent:?}");
    }
}
