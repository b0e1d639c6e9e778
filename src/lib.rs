//! Meridian as a program: the roles and how they are configured and wired.
//!
//! - [`config`]: the one configuration format (file, flags, environment) and
//!   each role's resolved configuration.
//! - [`roles`]: each role built once (`gateway`, `sfu`, `turn`), and run one per
//!   process in production.
//! - [`dev`]: `meridian dev`, every role in one process from the same builders,
//!   on the memory store and loopback defaults.
//! - [`telemetry`]: logging and OTLP.

pub mod config;
pub mod dev;
pub mod roles;
pub mod telemetry;

pub use dev::{
    find_client_js, random_secret, start_dev, DevOptions, DevRegion, DevStack, RunningRegion, CLIENT_JS, DEV_API_KEY,
    DEV_API_SECRET, DEV_REGION,
};
