//! The node's entry in the registry: a heartbeat every [`HEARTBEAT_INTERVAL`] with
//! its load, draining on request, and removal at clean shutdown.
//!
//! Gateways route only to nodes heard from within their stale limit (5 s), so a
//! node that dies stops getting joins within a few seconds, and its rooms move to
//! the next node a client reaches.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meridian_runtime::Health;
use meridian_schema::{NodeLoad, NodeRecord, StoreError};

use crate::turn_probe::{self, Change, Reachability};
use crate::Sfu;

/// Time between heartbeats (2 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Turns counters into rates between heartbeats.
#[derive(Default)]
pub struct LoadSampler {
    last: Option<(Instant, u64, f64)>,
}

impl LoadSampler {
    /// The node's load at `now`: participants and tracks as they are, forwarded
    /// bytes/s and CPU cores since the previous sample (zero on the first).
    pub fn sample(&mut self, sfu: &Sfu, now: Instant) -> NodeLoad {
        let (participants, tracks) = sfu.rooms.load();
        let bytes = sfu.rooms.forwarded_bytes();
        let cpu = meridian_runtime::process::cpu_time_now().map_or(0.0, |t| t.as_secs_f64());
        let (rate, cores) = match self.last {
            Some((t, b, c)) if now > t => {
                let secs = now.duration_since(t).as_secs_f64();
                ((bytes.saturating_sub(b) as f64 / secs) as u64, ((cpu - c) / secs).max(0.0) as f32)
            }
            _ => (0, 0.0),
        };
        self.last = Some((now, bytes, cpu));
        NodeLoad { participants, tracks, forwarded_bytes_per_sec: rate, cpu_cores: cores }
    }
}

impl Sfu {
    /// This node's registry entry with `load`, stamped `now`.
    pub fn node_record(&self, load: NodeLoad, now: SystemTime) -> NodeRecord {
        NodeRecord {
            id: self.config.node_id.clone(),
            region: self.config.region.clone(),
            position: self.config.position,
            signal_addr: self.config.advertise_signal.clone(),
            turn_urls: self.config.turn.as_ref().map(|t| t.urls.clone()).unwrap_or_default(),
            capacity: self.config.capacity,
            load,
            draining: self.draining.load(Ordering::Relaxed),
            last_seen: now,
        }
    }

    /// Writes one heartbeat now.
    ///
    /// Errors: [`StoreError::Unavailable`] when the store cannot be reached.
    pub async fn heartbeat(&self, sampler: &mut LoadSampler) -> Result<(), StoreError> {
        let load = sampler.sample(self, Instant::now());
        self.store.heartbeat(&self.node_record(load, SystemTime::now())).await
    }

    /// Stops taking new rooms (existing rooms carry on) and tells the registry.
    pub async fn drain(&self) -> Result<(), StoreError> {
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(node = %self.config.node_id, "draining: no new rooms");
        self.heartbeat(&mut LoadSampler::default()).await
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Heartbeats every [`HEARTBEAT_INTERVAL`] until `shutdown` resolves, then removes
/// the node's entry. A failed heartbeat is logged and retried at the next tick.
///
/// When `health` fails (a listener or task of this process died), the node
/// leaves the registry at once and heartbeats no more, so gateways stop routing
/// to it; it then waits for `shutdown`.
///
/// With a probed TURN relay ([`crate::TurnAdvert::probe`]), each tick first
/// probes it ([`turn_probe`]); while it counts as down the node stays out of the
/// registry, and it heartbeats again from the first answer.
pub async fn run_heartbeats(sfu: Arc<Sfu>, health: Health, shutdown: impl Future<Output = ()>) {
    let mut sampler = LoadSampler::default();
    let probe = sfu.config.turn.as_ref().and_then(|t| t.probe.clone());
    let mut relay = Reachability::default();
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let failed = health.failed();
    tokio::pin!(failed);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut failed => {
                tracing::error!(node = %sfu.config.node_id, failures = ?health.failures(),
                    "this process is failing: the node leaves the registry");
                leave(&sfu).await;
                shutdown.await;
                return;
            }
            _ = tick.tick() => {
                if let Some(target) = &probe {
                    if !relay_answers(&sfu, target, &mut relay).await {
                        continue;
                    }
                }
                if let Err(e) = sfu.heartbeat(&mut sampler).await {
                    sfu.metrics.heartbeat_failures.inc();
                    tracing::warn!(node = %sfu.config.node_id, error = %e, "heartbeat failed");
                }
            }
        }
    }
    leave(&sfu).await;
}

/// Probes the relay once; logs, counts and leaves the registry on the way
/// down. Returns whether the relay counts as up.
async fn relay_answers(sfu: &Sfu, target: &str, relay: &mut Reachability) -> bool {
    let result = turn_probe::probe(target).await;
    let node = &sfu.config.node_id;
    match (relay.observe(result.is_ok()), &result) {
        (Some(Change::Down), Err(e)) => {
            tracing::error!(%node, error = %e, failures = turn_probe::PROBE_FAILURES,
                "the TURN relay does not answer: the node leaves the registry until it does");
            leave(sfu).await;
        }
        (Some(Change::Up), _) => {
            tracing::info!(%node, relay = %target, "the TURN relay answers again: the node rejoins the registry")
        }
        (None, Err(e)) if !relay.is_down() => tracing::warn!(%node, error = %e, "TURN relay probe failed"),
        _ => {}
    }
    if let Some(up) = &sfu.metrics.turn_relay_up {
        // Up from the first answer on, until it counts as down.
        if result.is_ok() || relay.is_down() {
            up.set(i64::from(!relay.is_down()));
        }
    }
    !relay.is_down()
}

async fn leave(sfu: &Sfu) {
    match sfu.store.remove_node(&sfu.config.node_id).await {
        Ok(_) => tracing::info!(node = %sfu.config.node_id, "left the registry"),
        Err(e) => tracing::warn!(node = %sfu.config.node_id, error = %e, "could not leave the registry"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::net::UdpSocket;
    use tokio::time::sleep;
    use webrtc::stun::message::{Message, BINDING_SUCCESS};

    use super::*;

    /// Whether the node has an entry in its store now.
    async fn listed(sfu: &Sfu) -> bool {
        sfu.store.nodes().await.unwrap().iter().any(|n| n.id == sfu.config.node_id)
    }

    /// Heartbeats until the returned sender fires (or is dropped).
    fn heartbeating(sfu: &Arc<Sfu>, health: &Health) -> tokio::sync::oneshot::Sender<()> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run_heartbeats(Arc::clone(sfu), health.clone(), async move {
            let _ = stopped.await;
        }));
        stop
    }

    /// In virtual time: an entry removed is written again within one interval; a
    /// failed health removes it for good; shutdown removes it too.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_renew_the_entry_until_health_fails() {
        let sfu = crate::test_node();
        let health = Health::new();
        let stop = heartbeating(&sfu, &health);
        sleep(HEARTBEAT_INTERVAL / 2).await;
        assert!(listed(&sfu).await, "the first heartbeat is at once");
        sfu.store.remove_node(&sfu.config.node_id).await.unwrap();
        sleep(HEARTBEAT_INTERVAL).await;
        assert!(listed(&sfu).await, "written again by the next heartbeat");

        health.task_ended("a listener", "test");
        sleep(HEARTBEAT_INTERVAL / 2).await;
        assert!(!listed(&sfu).await, "left at once");
        sleep(HEARTBEAT_INTERVAL * 10).await;
        assert!(!listed(&sfu).await, "and never heartbeats again");
        drop(stop);
    }

    /// A relay that answers STUN Binding requests while `answering` holds.
    async fn relay(answering: Arc<AtomicBool>) -> String {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut request = Message::new();
                request.raw = buf[..n].to_vec();
                if !answering.load(Ordering::SeqCst) || request.decode().is_err() {
                    continue;
                }
                let mut answer = Message::new();
                answer.build(&[Box::new(request.transaction_id), Box::new(BINDING_SUCCESS)]).unwrap();
                let _ = socket.send_to(&answer.raw, from).await;
            }
        });
        addr
    }

    /// In virtual time: three silent probes in a row take the node out of the
    /// registry (one or two do not), the first answer brings it back, and the
    /// gauge follows.
    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_takes_the_node_out_until_it_answers() {
        let answering = Arc::new(AtomicBool::new(true));
        let target = relay(Arc::clone(&answering)).await;
        let turn = crate::TurnAdvert {
            urls: vec![format!("turn:{target}?transport=udp")],
            secret: b"s".to_vec(),
            ttl: Duration::from_secs(600),
            probe: Some(target),
        };
        let metrics = crate::metrics::SfuMetrics::default();
        let sfu = crate::test_node_with(Some(turn), &metrics);
        let up = sfu.metrics.turn_relay_up.clone().expect("a probed relay has the gauge");
        let _stop = heartbeating(&sfu, &Health::new());
        sleep(HEARTBEAT_INTERVAL / 2).await;
        assert!(listed(&sfu).await);
        assert_eq!(up.get(), 1, "the first probe was answered");

        answering.store(false, Ordering::SeqCst);
        // Two silent probes (each waits PROBE_TIMEOUT, then the next tick).
        sleep(HEARTBEAT_INTERVAL * 2).await;
        assert!(listed(&sfu).await, "one or two silent probes are not enough");
        sleep(HEARTBEAT_INTERVAL * 4).await;
        assert!(!listed(&sfu).await, "three in a row take the node out");
        assert_eq!(up.get(), 0);

        answering.store(true, Ordering::SeqCst);
        sleep(HEARTBEAT_INTERVAL * 2).await;
        assert!(listed(&sfu).await, "the first answer brings it back");
        assert_eq!(up.get(), 1);
    }

    #[test]
    fn this_process_has_cpu_time() {
        let cpu = meridian_runtime::process::cpu_time_now().expect("/proc/self/stat is readable on Linux");
        assert!(cpu.as_secs_f64() >= 0.0);
    }
}
