//! Meridian's measuring instruments: the load tester ([`loadtest`]) that the
//! `meridian-loadtest` binary runs. The other benchmarks live in `meridian-bench`.

pub mod loadtest;
