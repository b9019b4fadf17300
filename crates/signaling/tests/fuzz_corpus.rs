//! Replays fuzz/corpus/signaling_json on every `cargo test`: each frame parses
//! or fails with a typed error, what parses re-serialises to the same message,
//! and a `Rooms` fed the frame answers without panicking.

use std::path::Path;
use std::time::Instant;

use p2p_signaling::{ClientMsg, Limits, Rooms};

#[test]
fn signaling_json_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/signaling_json");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        n += 1;
        if let Ok(msg) = ClientMsg::from_json(text) {
            let again = ClientMsg::from_json(&msg.to_json()).unwrap();
            assert_eq!(again, msg, "{}", path.display());
        }
        let now = Instant::now();
        let mut rooms = Rooms::new(Limits::default());
        let (a, _) = rooms.connect(now).unwrap();
        let _ = rooms.handle_text(a, now, text);
    }
    assert!(n >= 3, "corpus at {} is nearly empty", dir.display());
}
