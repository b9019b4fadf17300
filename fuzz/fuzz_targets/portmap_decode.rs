//! PCP and NAT-PMP responses from arbitrary bytes: decoding never panics;
//! a port-mapping client fed them as answers from its gateway, in every
//! phase (asking with PCP, with NAT-PMP, holding a mapping, deleting it),
//! never panics and keeps its timers bounded.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_portmap::{PortMapConfig, PortMapper, Response};
use p2p_proto::{Datagram, Machine};

fuzz_target!(|data: &[u8]| {
    let _ = Response::decode(data);
    let t0 = Instant::now();
    let local = "10.0.2.2:40000".parse().unwrap();
    let mut m = PortMapper::new(PortMapConfig::new("10.0.2.1".parse().unwrap(), local).with_seed(1));
    m.handle_timeout(t0);
    let gw = m.config().gateway;
    for step in 0..4u64 {
        let now = t0 + Duration::from_secs(step);
        let _ = m.handle_input(now, Datagram::udp(gw, local, data));
        while m.poll_output().is_some() {}
        if step == 2 {
            m.close(now);
        }
        if let Some(at) = m.poll_timeout() {
            assert!(at >= now || step == 0);
            m.handle_timeout(at.max(now));
        }
        while m.poll_output().is_some() {}
    }
});
