//! Any bytes as a D-Bus message through the proxy's framing, zbus's header reading and both of
//! the proxy's judges: none of it may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    doppel_core::busproxy::relay::fuzz_one(data);
});
