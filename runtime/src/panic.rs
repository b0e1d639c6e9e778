//! Panics, reported: the process hook marks [`Health`] failed, and [`contain`]
//! keeps a panic to the one message that caused it.
//!
//! Tokio catches a panic in a spawned task and ends only that task; nobody is
//! told. For a listener's read loop (the `turn` crate's), that is the listener
//! gone with the process up. The hook makes every panic count: the process goes
//! out of service, loudly, with the task (the current `tracing` span and the
//! thread) and the reason (message and location).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};

use crate::health::{Failure, Health};

thread_local! {
    /// Depth of [`contain`] calls on this thread; the hook stays quiet inside one.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
    /// The reason of the last panic caught by [`contain`] on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the process panic hook: every panic outside [`contain`] marks
/// `health` failed with its task and reason, then runs the previous hook (the
/// default prints it to stderr). Call once, in `main` (a second call chains).
pub fn install_hook(health: Health) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let reason = describe(info);
        if CONTAINED.with(Cell::get) > 0 {
            // Counted and logged, rate-limited, by `contain`; a printed backtrace per
            // crafted packet would be a way to fill the disk.
            CAUGHT.with(|c| *c.borrow_mut() = Some(reason));
            return;
        }
        health.panicked(Failure { task: current_task(), reason });
        previous(info);
    }));
}

/// Runs `f`; if it panics, counts and logs the panic as `task`'s (rate-limited)
/// and returns `None` instead of unwinding. For per-message work whose state a
/// panic cannot leave half-written (a datagram's verdict): the message is lost,
/// the listener is not.
pub fn contain<T>(health: &Health, task: &str, f: impl FnOnce() -> T) -> Option<T> {
    CONTAINED.with(|c| c.set(c.get().saturating_add(1)));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    match result {
        Ok(t) => Some(t),
        Err(payload) => {
            let reason = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_else(|| message(&*payload));
            health.contained(&Failure { task: task.to_owned(), reason });
            None
        }
    }
}

/// The current span's name and the thread's name, e.g. `sfu.session on tokio-runtime-worker`.
fn current_task() -> String {
    let span = tracing::Span::current();
    let name = span.metadata().map(|m| m.name()).unwrap_or("no span");
    let thread = std::thread::current();
    format!("{name} on {}", thread.name().unwrap_or("unnamed thread"))
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let what = message(info.payload());
    match info.location() {
        Some(at) => format!("panicked at {}:{}: {what}", at.file(), at.line()),
        None => format!("panicked: {what}"),
    }
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test owns the process hook: tests in one binary share it.
    #[test]
    fn panics_fail_the_process_unless_contained_to_their_message() {
        let health = Health::new();
        install_hook(health.clone());

        let kept = contain(&health, "turn gate", || -> u32 { panic!("crafted datagram") });
        assert_eq!(kept, None);
        assert!(health.is_healthy(), "a contained panic leaves the process in service");
        assert_eq!(contain(&health, "turn gate", || 7), Some(7));

        let task = std::thread::Builder::new()
            .name("listener".into())
            .spawn(|| {
                let _span = tracing::info_span!("turn.listener").entered();
                panic!("read loop broke");
            })
            .unwrap();
        assert!(task.join().is_err());
        let failures = health.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].task.ends_with("on listener"), "{}", failures[0].task);
        assert!(
            failures[0].reason.contains("read loop broke") && failures[0].reason.contains("panic.rs"),
            "{}",
            failures[0].reason
        );
    }
}
