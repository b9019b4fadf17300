//! Access-link effects: latency, jitter, loss, duplication, reordering.

use std::time::Duration;

use rand::Rng;

use crate::node::Transport;

/// Properties of one host's access link (str0m netem's knobs).
///
/// A packet from host A to host B crosses A's link, then B's link, so with the
/// default 10 ms latency a one-way trip takes 20 ms and a round trip 40 ms.
/// Effects are drawn from the simulation's seeded RNG, once per link crossed.
///
/// `Tcp` datagrams only see `latency`: no jitter, loss, duplication or reordering,
/// which keeps them in order.
///
/// Build one with struct-update syntax:
/// `LinkConfig { loss: 0.1, ..LinkConfig::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay of the link.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per packet (may reorder).
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a UDP packet is lost on this link.
    pub loss: f64,
    /// Probability in `0.0..=1.0` that a UDP packet is delivered twice (the
    /// copy gets its own jitter).
    pub duplicate: f64,
    /// Probability in `0.0..=1.0` that a UDP packet is held back by
    /// `reorder_delay`, so that packets sent after it overtake it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
}

impl Default for LinkConfig {
    /// 10 ms latency, no jitter, no loss, no duplication, no reordering
    /// (`reorder_delay` 50 ms, used only once `reorder > 0`).
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(50),
        }
    }
}

impl LinkConfig {
    /// A perfect link with the given latency.
    pub fn with_latency(latency: Duration) -> Self {
        LinkConfig {
            latency,
            ..LinkConfig::default()
        }
    }

    /// Delays of the copies of one packet crossing this link: empty if it is
    /// lost, two entries if it is duplicated.
    pub(crate) fn crossing(&self, proto: Transport, rng: &mut impl Rng) -> Vec<Duration> {
        if proto.is_reliable() {
            return vec![self.latency];
        }
        if chance(rng, self.loss) {
            return Vec::new();
        }
        let copies = if chance(rng, self.duplicate) { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                let mut d = self.latency;
                if !self.jitter.is_zero() {
                    let nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
                    d += Duration::from_nanos(rng.gen_range(0..=nanos));
                }
                if chance(rng, self.reorder) {
                    d += self.reorder_delay;
                }
                d
            })
            .collect()
    }
}

/// True with probability `p`; consumes no randomness when `p <= 0`.
fn chance(rng: &mut impl Rng, p: f64) -> bool {
    if p <= 0.0 || p.is_nan() {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.gen::<f64>() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn tcp_ignores_loss_and_jitter() {
        let link = LinkConfig {
            loss: 1.0,
            jitter: Duration::from_millis(5),
            duplicate: 1.0,
            ..LinkConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(link.crossing(Transport::Tcp, &mut rng), vec![link.latency]);
        assert!(link.crossing(Transport::Udp, &mut rng).is_empty());
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let link = LinkConfig {
            jitter: Duration::from_millis(5),
            ..LinkConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen_distinct = false;
        let mut first = None;
        for _ in 0..1000 {
            let d = link.crossing(Transport::Udp, &mut rng);
            assert_eq!(d.len(), 1);
            assert!(d[0] >= link.latency && d[0] <= link.latency + link.jitter);
            match first {
                None => first = Some(d[0]),
                Some(f) if f != d[0] => seen_distinct = true,
                Some(_) => {}
            }
        }
        assert!(seen_distinct);
    }
}
