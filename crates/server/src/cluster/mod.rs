//! Many `p2p serve` nodes as one service (issue 16), and what a single
//! node does so that its clients survive its restart.
//!
//! Resume tokens: every `welcome` carries one (see `docs/signaling.md`,
//! `resume`). They are signed with a key every node of the service shares
//! and that outlives a restart: derived from the TURN REST secret
//! (`turn.auth_secret`) when one is set, else random per run (a restart
//! then cannot take back the old peer ids). Peer ids carry a tag drawn
//! per run (`p<tag>-<n>`), so that a restarted node (or another node)
//! never hands out an id a resuming client still holds.

use p2p_signaling::{ResumeConfig, ServerConfig};
use rand::Rng;

use crate::config::Config;

/// What the resume key is derived from, so that it outlives a restart.
const RESUME_KEY_LABEL: &str = "p2p-signaling resume key v1";

/// The resume key of this service: shared by every node that shares the
/// TURN REST secret, or random.
pub(crate) fn resume_key(config: &Config) -> Vec<u8> {
    match &config.turn.auth_secret {
        Some(secret) => {
            p2p_signaling::rest_credential(secret.as_bytes(), RESUME_KEY_LABEL).into_bytes()
        }
        None => rand::thread_rng().gen::<[u8; 32]>().to_vec(),
    }
}

/// A tag of this run for peer ids: four lowercase letters and digits.
pub(crate) fn run_tag() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..4)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Turns on resume tokens and per-run peer ids.
pub(crate) fn setup_resume(sc: &mut ServerConfig, config: &Config) {
    sc.resume = Some(ResumeConfig::new(resume_key(config)));
    sc.peer_id_prefix = format!("p{}-", run_tag());
}
