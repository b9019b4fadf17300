//! Packet buffers shared by the producers of inbound packets and the TURN task.

/// Capacity of a pooled packet buffer: a datagram of the usual MTU fits.
const POOL_BUF: usize = 2048;
/// Buffers kept in the [`BufPool`] at most (the rest are freed).
const POOL_MAX: usize = 1024;

/// Packet buffers shared by the producers of [`Inbound::Packet`] (UDP
/// workers, relayed sockets' readers, TCP/TLS connections) and the TURN
/// task, which gives them back once the packet is handled: in steady state
/// relaying allocates nothing per packet.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    bufs: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A buffer holding a copy of `bytes`.
    pub(crate) fn copy_of(&self, bytes: &[u8]) -> Vec<u8> {
        let pooled = match self.bufs.lock() {
            Ok(mut v) => v.pop(),
            Err(_) => None,
        };
        let mut b = pooled.unwrap_or_else(|| Vec::with_capacity(POOL_BUF.max(bytes.len())));
        b.extend_from_slice(bytes);
        b
    }

    /// Give buffers back (cleared here), leaving `bufs` empty; oversized
    /// ones and those beyond [`POOL_MAX`] are freed.
    pub(crate) fn give_back(&self, bufs: &mut Vec<Vec<u8>>) {
        if bufs.is_empty() {
            return;
        }
        if let Ok(mut v) = self.bufs.lock() {
            for b in bufs.drain(..) {
                keep(&mut v, b);
            }
        }
        bufs.clear();
    }

    /// Give one buffer back.
    pub(crate) fn give(&self, b: Vec<u8>) {
        if let Ok(mut v) = self.bufs.lock() {
            keep(&mut v, b);
        }
    }

    /// How many buffers wait in the pool.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.bufs.lock().map_or(0, |v| v.len())
    }
}

pub(super) fn keep(pool: &mut Vec<Vec<u8>>, mut b: Vec<u8>) {
    if pool.len() < POOL_MAX && b.capacity() <= 4 * POOL_BUF {
        b.clear();
        pool.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_reuses_buffers_and_stays_bounded() {
        let pool = BufPool::default();
        let b = pool.copy_of(b"abc");
        assert_eq!(b, b"abc");
        let at = b.as_ptr();
        pool.give(b);
        assert_eq!(pool.len(), 1);
        let c = pool.copy_of(b"xy");
        assert_eq!(c, b"xy", "cleared before reuse");
        assert_eq!(c.as_ptr(), at, "the same buffer");
        assert_eq!(pool.len(), 0);
        pool.give(vec![0u8; 5 * POOL_BUF]);
        assert_eq!(pool.len(), 0, "oversized buffers are freed");
        let mut many: Vec<Vec<u8>> = (0..POOL_MAX + 5).map(|_| pool.copy_of(b"z")).collect();
        pool.give_back(&mut many);
        assert!(many.is_empty());
        assert_eq!(pool.len(), POOL_MAX);
        let big = pool.copy_of(&[1u8; 3 * POOL_BUF]);
        assert_eq!(big.len(), 3 * POOL_BUF, "a large datagram fits");
    }
}
