//! Fuzz `p2p_sdp::SessionDescription::parse`: it must not panic, whatever it
//! reads must read back equal after writing, and answering a parsed offer
//! must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_sdp::{DataChannelParams, Fingerprint, Pwd, SessionDescription, Setup, Ufrag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sd) = SessionDescription::parse(text) else {
        return;
    };
    let written = sd.to_string();
    assert_eq!(
        SessionDescription::parse(&written).as_ref(),
        Ok(&sd),
        "{written}"
    );

    let (Ok(ufrag), Ok(pwd), Ok(fingerprint)) = (
        Ufrag::new("fuzz"),
        Pwd::new("fuzzfuzzfuzzfuzzfuzzfu"),
        Fingerprint::new("sha-256", vec![0; 32]),
    ) else {
        return;
    };
    let params = DataChannelParams::new(ufrag, pwd, fingerprint, Setup::Active, 1);
    if let Ok(answer) = SessionDescription::answer_data_channel(&sd, &params) {
        let written = answer.to_string();
        assert_eq!(SessionDescription::parse(&written).as_ref(), Ok(&answer));
    }
});
