//! Candidate pairs: states (RFC 8445 §6.1.2.6) and the pair priority
//! (§6.1.2.3).

use std::fmt;

/// The state of a candidate pair in the check list (RFC 8445 §6.1.2.6).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairState {
    /// Not checked yet and waiting for a pair of the same foundation.
    Frozen,
    /// To be checked when its turn comes.
    Waiting,
    /// A check was sent and has no answer yet.
    InProgress,
    /// A check succeeded.
    Succeeded,
    /// Checks failed (timeout, error response, or non-symmetric answer).
    Failed,
}

impl fmt::Display for PairState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PairState::Frozen => "frozen",
            PairState::Waiting => "waiting",
            PairState::InProgress => "in-progress",
            PairState::Succeeded => "succeeded",
            PairState::Failed => "failed",
        })
    }
}

/// The priority of a pair (RFC 8445 §6.1.2.3), where `g` is the priority of
/// the controlling agent's candidate and `d` that of the controlled agent's:
/// `2^32 * MIN(G,D) + 2 * MAX(G,D) + (G > D ? 1 : 0)`.
///
/// Candidate priorities are at most 2^31 - 1 (RFC 8445 §5.1.2); larger
/// values (a peer's PRIORITY attribute can carry any 32 bits) are clamped to
/// that, so the sum never overflows.
pub const fn pair_priority(g: u32, d: u32) -> u64 {
    const MAX: u32 = 0x7FFF_FFFF;
    let g = if g > MAX { MAX } else { g };
    let d = if d > MAX { MAX } else { d };
    let (min, max) = if g < d { (g, d) } else { (d, g) };
    ((min as u64) << 32) + 2 * max as u64 + if g > d { 1 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_priority_rfc8445_6_1_2_3() {
        // G = host 2130706431 (controlling), D = srflx 1694498815 (controlled):
        // 2^32 * 1694498815 + 2 * 2130706431 + 1
        assert_eq!(
            pair_priority(2_130_706_431, 1_694_498_815),
            7_277_816_997_797_167_103
        );
        // The same candidates with the roles swapped: G < D, no +1.
        assert_eq!(
            pair_priority(1_694_498_815, 2_130_706_431),
            7_277_816_997_797_167_102
        );
        // relay/relay: 2^32 * 16777215 + 2 * 16777215 + 0
        assert_eq!(
            pair_priority(16_777_215, 16_777_215),
            72_057_589_776_515_070
        );
        // Both agents compute the same number for the same pair.
        let (a, b) = (123_456, 654_321);
        assert_eq!(pair_priority(a, b), pair_priority(a, b));
        // Out-of-range priorities are clamped to 2^31 - 1, never overflow.
        assert_eq!(
            pair_priority(u32::MAX, u32::MAX),
            pair_priority(0x7FFF_FFFF, 0x7FFF_FFFF)
        );
        assert_eq!(
            pair_priority(0x7FFF_FFFF, 0x7FFF_FFFF),
            (0x7FFF_FFFFu64 << 32) + 2 * 0x7FFF_FFFF
        );
    }
}
