//! Which positions of a sequence a layer keeps: all of them, the last `window`, or the chunk
//! of the newest token (chunked local attention). Layouts and the block pool size their
//! layers from it.

use crate::shape::AttentionKind;

/// The positions a layer keeps of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Every position.
    All,
    /// The last `w` positions (sliding window).
    Window(u64),
    /// The positions of the newest token's chunk; chunks start at multiples of `c`.
    Chunk(u64),
}

impl Span {
    /// The span of a layer of `kind`; None when the layer keeps nothing of its own.
    pub fn of(kind: AttentionKind) -> Option<Span> {
        match kind {
            AttentionKind::Full | AttentionKind::Mla { .. } => Some(Span::All),
            AttentionKind::Sliding { window } => Some(Span::Window(window as u64)),
            AttentionKind::Chunked { chunk } => Some(Span::Chunk(chunk as u64)),
            AttentionKind::NoAttention | AttentionKind::SharedKv { .. } => None,
        }
    }

    /// The first position kept once the sequence holds `len` tokens.
    pub fn first(self, len: u64) -> u64 {
        match self {
            Span::All => 0,
            Span::Window(w) => len.saturating_sub(w),
            Span::Chunk(c) => len.saturating_sub(1) / c.max(1) * c,
        }
    }

    /// Tokens kept once the sequence holds `len`.
    pub fn held(self, len: u64) -> u64 {
        len - self.first(len).min(len)
    }

    /// The most tokens kept at any length up to `len`: what a preallocated buffer must fit.
    pub fn peak(self, len: u64) -> u64 {
        match self {
            Span::All => len,
            Span::Window(w) | Span::Chunk(w) => len.min(w),
        }
    }

    /// Blocks of `block` tokens that the positions kept at `len` touch.
    pub fn blocks_at(self, len: u64, block: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        (len - 1) / block - self.first(len) / block + 1
    }

    /// Blocks a sequence growing to `len` tokens holds at its widest: for a window, the most
    /// its last `w` positions touch at any length up to `len` (one block more than at an
    /// aligned length, once the window has started at every offset in a block); for chunks,
    /// the most any chunk up to `len` touches, since a chunk is held whole until the next
    /// one begins.
    pub fn blocks(self, len: u64, block: u64) -> u64 {
        match self {
            Span::Chunk(c) if len > c => self
                .chunk_ends(len, block)
                .map(|t| self.blocks_at(t, block))
                .max()
                .unwrap_or(0),
            // The window's start moves through every offset of a block within `block`
            // lengths, so the widest is among the last `block` lengths (or at `w` itself).
            Span::Window(w) if len > w => {
                let from = len.saturating_sub(block - 1).max(w);
                (from..=len)
                    .map(|t| self.blocks_at(t, block))
                    .max()
                    .unwrap_or(0)
            }
            _ => self.blocks_at(len, block),
        }
    }

    /// The lengths at which a chunked layer is widest, up to `len`: the end of every chunk
    /// whose start lies in a different place within its block (chunk starts repeat within
    /// blocks with period block / gcd(block, chunk)), and `len` itself; plus the ends of
    /// the first `also_first` chunks. Empty for other spans.
    pub fn chunk_ends_from(
        self,
        len: u64,
        block: u64,
        also_first: u64,
    ) -> impl Iterator<Item = u64> {
        let (c, full) = match self {
            Span::Chunk(c) if c > 0 => (c, len / c),
            _ => (1, 0),
        };
        let period = block / gcd(block, c);
        let n = full.min(period.saturating_add(also_first));
        (1..=n)
            .map(move |k| k * c)
            .chain((full > 0 && !len.is_multiple_of(c)).then_some(len))
    }

    fn chunk_ends(self, len: u64, block: u64) -> impl Iterator<Item = u64> {
        self.chunk_ends_from(len, block, 0)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_keeps_the_newest_tokens_chunk() {
        let s = Span::Chunk(8192);
        // 8192 tokens: the whole first chunk; one more starts the second chunk.
        assert_eq!((s.first(8192), s.held(8192)), (0, 8192));
        assert_eq!((s.first(8193), s.held(8193)), (8192, 1));
        assert_eq!(s.held(20_000), 20_000 - 16_384);
        assert_eq!(s.peak(20_000), 8192);
        assert_eq!(s.peak(100), 100);
    }

    #[test]
    fn chunk_blocks_are_the_widest_chunk_so_far() {
        // Aligned chunks: 8192 / 16 = 512 blocks, at any length past the first chunk.
        let s = Span::Chunk(8192);
        assert_eq!(s.blocks(8193, 16), 512);
        assert_eq!(s.blocks(32_768, 16), 512);
        assert_eq!(s.blocks(100, 16), 7);
        // Chunk 24 over blocks of 16: chunk 0 [0,24) touches blocks 0-1, chunk 1 [24,48)
        // touches 1-2, chunk 2 [48,72) touches 3-4: two blocks, then at 80 tokens chunk 3
        // holds [72,80), one block. Widest: 2.
        let s = Span::Chunk(24);
        assert_eq!(s.blocks(80, 16), 2);
        // Chunk 20 over blocks of 16: [20,40) touches 1-2, [40,60) touches 2-3,
        // [60,80) touches 3-4; [0,20) touches 0-1: always 2. Chunk 40: [0,40) 0-2 = 3,
        // [40,80) 2-4 = 3.
        assert_eq!(Span::Chunk(20).blocks(80, 16), 2);
        assert_eq!(Span::Chunk(40).blocks(80, 16), 3);
        // Chunk 17: a chunk starting at offset o of a block ends at o + 16 < 32: 2 blocks.
        assert_eq!(Span::Chunk(17).blocks(16 * 17, 16), 2);
    }

    #[test]
    fn window_blocks_are_the_widest_so_far() {
        // At 10,000 tokens the last 4096 start at 5904 = 369 x 16: 256 blocks; at 9,996 they
        // start mid-block: 257, which a sequence growing to 10,000 passed through.
        assert_eq!(Span::Window(4096).blocks_at(10_000, 16), 256);
        assert_eq!(Span::Window(4096).blocks_at(9_996, 16), 257);
        assert_eq!(Span::Window(4096).blocks(10_000, 16), 257);
        // Just past the window the start has not yet left the first block... 4097 tokens:
        // positions 1..4097 touch blocks 0..=256: 257.
        assert_eq!(Span::Window(4096).blocks(4097, 16), 257);
        assert_eq!(Span::Window(4096).blocks(4096, 16), 256);
        assert_eq!(Span::All.blocks(1000, 16), 63);
    }
}
