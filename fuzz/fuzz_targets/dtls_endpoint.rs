//! The DTLS endpoint of p2p-dtls mid-handshake and connected, with an
//! honest peer, under fuzzer-chosen delivery, loss, garbage, mutations,
//! time and commands (see `p2p_fuzz::dtls`). Nothing may panic; only data
//! the peer sent is delivered, and none to a peer with a wrong fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2p_fuzz::dtls::run(data);
});
