//! The health of one process: healthy until a task fails.
//!
//! A failure is final for the process: what failed (a listener's read loop, a
//! connection task that panicked) does not come back, and a half-served region
//! is worse than one out of service. Whoever serves health checks reads
//! [`Health::check`]; the SFU's heartbeat leaves the registry on the first
//! failure. Restarting is the supervisor's job (systemd, the autoscaler), on the
//! 503 from `/healthz`.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// Failures remembered for `/healthz` and the log (the count goes on in metrics).
const KEPT_FAILURES: usize = 16;

/// One task that ended when it should not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which task: e.g. `turn udp listener 0.0.0.0:3478`, or the panicking span.
    pub task: String,
    /// Why: the panic message and location, or the error that ended it.
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.task, self.reason)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

struct Inner {
    failures: Mutex<Vec<Failure>>,
    /// `true` once failed; watched by [`Health::failed`].
    failed: watch::Sender<bool>,
    counts: Family<KindLabel, Counter>,
}

/// The process's health; cheap to clone, every clone is the same health.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        let inner = Inner { failures: Mutex::default(), failed: watch::Sender::new(false), counts: Family::default() };
        Self { inner: Arc::new(inner) }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("failures", &self.failures()).finish()
    }
}

impl Health {
    /// A healthy process, with no metrics registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `meridian_task_failures_total{kind}` in `registry`: tasks that
    /// ended unexpectedly (`kind="ended"`), panics that took the process out of
    /// service (`kind="panic"`) and panics contained to one message
    /// (`kind="contained_panic"`). Also registers the process's CPU and memory
    /// metrics ([`crate::process`]): the health's registry is the process's, so
    /// every role exports them.
    pub fn register(&self, registry: &mut Registry) {
        crate::process::register(registry);
        registry.register(
            "meridian_task_failures",
            "Tasks that ended unexpectedly and panics, by kind",
            self.inner.counts.clone(),
        );
        for kind in ["ended", "panic", "contained_panic"] {
            drop(self.inner.counts.get_or_create(&KindLabel { kind }));
        }
    }

    /// Marks the process failed: `task` ended unexpectedly because of `reason`.
    /// Logged at ERROR with both; counted under `kind="ended"`.
    pub fn task_ended(&self, task: &str, reason: &str) {
        self.fail("ended", Failure { task: task.to_owned(), reason: reason.to_owned() });
    }

    /// Marks the process failed by a panic (the panic hook calls this).
    pub(crate) fn panicked(&self, failure: Failure) {
        self.fail("panic", failure);
    }

    /// Counts a panic that [`crate::panic::contain`] kept to one message; the
    /// process stays healthy.
    pub(crate) fn contained(&self, failure: &Failure) {
        self.inner.counts.get_or_create(&KindLabel { kind: "contained_panic" }).inc();
        tracing::error!(task = %failure.task, reason = %failure.reason, "panic contained; that message was dropped");
    }

    fn fail(&self, kind: &'static str, failure: Failure) {
        self.inner.counts.get_or_create(&KindLabel { kind }).inc();
        tracing::error!(task = %failure.task, reason = %failure.reason, kind, "task failed: node out of service");
        let mut failures = self.inner.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < KEPT_FAILURES {
            failures.push(failure);
        }
        drop(failures);
        self.inner.failed.send_replace(true);
    }

    /// `Ok` while no task has failed; else the first failures (at most 16).
    pub fn check(&self) -> Result<(), Vec<Failure>> {
        if self.is_healthy() {
            Ok(())
        } else {
            Err(self.failures())
        }
    }

    /// Whether no task has failed.
    pub fn is_healthy(&self) -> bool {
        !*self.inner.failed.borrow()
    }

    /// The failures so far (at most 16 kept).
    pub fn failures(&self) -> Vec<Failure> {
        self.inner.failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `/healthz` answer: `(200, "ok")`, or `(503, "unhealthy: …")` with one
    /// failure per line.
    pub fn healthz(&self) -> (u16, String) {
        match self.check() {
            Ok(()) => (200, "ok".to_owned()),
            Err(failures) => {
                let mut body = String::from("unhealthy\n");
                for f in failures {
                    body.push_str(&format!("{f}\n"));
                }
                (503, body)
            }
        }
    }

    /// Resolves once the process has failed (at once if it already has).
    pub async fn failed(&self) {
        let mut rx = self.inner.failed.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it closed.
        let _ = rx.wait_for(|failed| *failed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_ends_fails_the_process_for_good_and_says_which_and_why() {
        let health = Health::new();
        let mut registry = Registry::default();
        health.register(&mut registry);
        assert_eq!(health.healthz(), (200, "ok".to_owned()));
        health.task_ended("turn udp listener 127.0.0.1:3478", "read loop ended");
        let (status, body) = health.healthz();
        assert_eq!(status, 503);
        assert!(body.contains("turn udp listener 127.0.0.1:3478: read loop ended"), "{body}");
        assert!(!health.clone().is_healthy(), "clones share it");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("meridian_task_failures_total{kind=\"ended\"} 1"), "{text}");
        assert!(text.contains("meridian_task_failures_total{kind=\"panic\"} 0"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_failure_wakes_when_a_task_fails() {
        let health = Health::new();
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.failed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        health.task_ended("t", "x");
        waiter.await.unwrap();
        health.failed().await; // already failed: at once
    }

    #[test]
    fn only_the_first_failures_are_kept() {
        let health = Health::new();
        for i in 0..100 {
            health.task_ended(&format!("t{i}"), "x");
        }
        assert_eq!(health.failures().len(), KEPT_FAILURES);
        assert_eq!(health.failures()[0].task, "t0");
    }
}
