//! Meridian's measuring instruments: the load tester ([`loadtest`]) that the
//! `meridian-loadtest` binary runs, with its Janus VideoRoom adapter ([`janus`]).
//! The other benchmarks live in `meridian-bench`; [`floor`] is the forwarding
//! floor it measures.

pub mod floor;
pub mod janus;
pub mod loadtest;
