//! What every Meridian role runs on, whatever it serves.
//!
//! - [`health`]: the process's [`Health`]. A listener or task that ends when it
//!   should not, or a panic anywhere, marks it failed; `/healthz` then answers
//!   503, an SFU node leaves the registry (the gateway stops routing to it), a
//!   metric counts it and the log says which task and why. Never "process up,
//!   relay silently gone".
//! - [`panic`]: the panic hook that reports to [`Health`], and [`panic::contain`]
//!   for a per-message boundary that drops the message instead of the task.
//! - [`accept`]: the bounded accept loop of every TCP listener.
//! - [`log_limit`]: a per-source rate limit for log lines about refused or
//!   malformed input, so that a flood of it cannot flood the disk.
//! - [`process`]: the process's CPU time and resident memory as metrics, read
//!   from `/proc` on each scrape (registered with the health's metrics).

pub mod accept;
pub mod health;
pub mod log_limit;
pub mod panic;
pub mod process;

pub use health::{Failure, Health};
