//! A LiveKit signal frame (`sfu/src/signal.rs`): one binary WebSocket message
//! decoded as `SignalRequest` (prost) and dispatched as `signal::handle` does,
//! against a real participant in a real room; see `sfu/src/fuzzing.rs` for what
//! of each handler runs and what is left out (the offer's peer-connection work).
//!
//! Input: the frame's payload.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use meridian_sfu::fuzzing::SignalHarness;

thread_local! {
    static HARNESS: RefCell<Option<SignalHarness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let _ = h.get_or_insert_with(SignalHarness::new).frame(data);
    });
});
