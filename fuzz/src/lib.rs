//! What the stateful fuzz targets share: reading the fuzzer's bytes as a
//! stream of choices, and raw attributes made from them.

use p2p_stun::{AttrType, MessageBuilder};

pub mod dtls;

/// The fuzzer's input, consumed front to back; `None` when it runs out.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    /// Add an attribute with a value of 0 to 23 arbitrary bytes: of one of
    /// the `known` types, or of any type at all when `any_type`.
    pub fn raw_attribute(
        &mut self,
        b: &mut MessageBuilder<Vec<u8>>,
        known: &[AttrType],
        any_type: bool,
    ) -> Option<()> {
        let typ = if any_type || known.is_empty() {
            AttrType(self.u16()?)
        } else {
            known[usize::from(self.byte()?) % known.len()]
        };
        let len = usize::from(self.byte()? % 24);
        b.add_raw(typ, self.bytes(len)).ok()?;
        Some(())
    }
}
