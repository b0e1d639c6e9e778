//! Meridian's measuring instruments: the load tester ([`loadtest`]) that the
//! `meridian-loadtest` binary runs, against LiveKit-protocol SFUs or Janus's
//! VideoRoom. The other benchmarks live in `meridian-bench`; [`floor`] is the
//! forwarding floor it measures.

pub mod floor;
pub mod loadtest;
