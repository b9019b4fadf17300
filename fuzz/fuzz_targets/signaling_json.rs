//! Fuzz the signaling JSON: `ClientMsg::from_json` and `ServerMsg::from_json`
//! must not panic, whatever parses must read back equal after writing, and
//! `Rooms::handle_text` must answer any frame without panicking (two
//! connections in one room, so relaying paths are reached too).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2p_signaling::{ClientMsg, Limits, Rooms, ServerMsg};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = ClientMsg::from_json(text) {
        let written = m.to_json();
        assert_eq!(ClientMsg::from_json(&written).as_ref(), Ok(&m), "{written}");
    }
    if let Ok(m) = ServerMsg::from_json(text) {
        let written = m.to_json();
        assert_eq!(ServerMsg::from_json(&written).as_ref(), Ok(&m), "{written}");
    }

    let now = Instant::now();
    let mut rooms = Rooms::new(Limits::default());
    let Ok((a, _)) = rooms.connect(now) else {
        return;
    };
    let Ok((b, _)) = rooms.connect(now) else {
        return;
    };
    rooms.handle_text(a, now, r#"{"type":"join","room":"r"}"#);
    rooms.handle_text(b, now, r#"{"type":"join","room":"r"}"#);
    // The frame as is, and with the peer ids filled in where a test might put them.
    for frame in [text.to_owned(), text.replace("PEER", "p2")] {
        for (to, msg) in rooms.handle_text(a, now, &frame) {
            assert!(to == a || to == b);
            assert_eq!(ServerMsg::from_json(&msg.to_json()).as_ref(), Ok(&msg));
        }
    }
    rooms.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(rooms.connection_count(), 0);
});
