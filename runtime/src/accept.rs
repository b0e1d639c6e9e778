//! The one bounded accept loop every TCP listener of a role uses (gateway,
//! SFU signal, metrics).
//!
//! At most `max_connections` handlers run at once: the loop stops accepting
//! while all permits are out, so the kernel's backlog, not our memory, holds
//! the excess. An accept error (EMFILE, ENFILE, ENOBUFS) is logged, rate-limited,
//! and followed by [`ACCEPT_BACKOFF`]: retrying at once spun a core while the
//! process was out of file descriptors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::log_limit::LogLimit;

/// Pause after a failed accept: 100 ms.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts on `listener` until `shutdown` resolves, running `handler` on its own
/// task for each connection, at most `max_connections` (at least 1) at once.
/// `name` labels the log lines. Handlers in flight are not awaited.
pub async fn serve_bounded<H, F>(
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let errors: LogLimit<()> = LogLimit::new("accept errors");
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            // Never closed, so acquire cannot fail; stop if it ever did.
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if errors.check((), Instant::now()).write {
                        tracing::warn!(listener = name, error = %e, "accept failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let connection = handler(stream, peer);
        tokio::spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
    tracing::info!(listener = name, "stopped accepting");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With one permit, a second connection waits until the first handler ends.
    #[tokio::test]
    async fn connections_past_the_bound_wait_for_a_free_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_bounded(
            "test",
            listener,
            1,
            async move {
                let _ = stopped.await;
            },
            move |_stream, peer| {
                let (mut released, served) = (released.clone(), served_tx.clone());
                async move {
                    let _ = served.send(peer);
                    let _ = released.wait_for(|r| *r).await;
                }
            },
        ));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = served.recv().await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::task::yield_now().await;
        assert!(served.try_recv().is_err(), "the second waits for the slot");
        release.send_replace(true);
        let second = served.recv().await.unwrap();
        assert_ne!(first, second);
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
