//! Content hashes: XXH64 for bit-exact block checks, and chained prefix keys so a block is
//! named by the tokens that produced it (two runs sharing a prefix share its blocks).

use std::fmt;

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn read_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn read_u32(b: &[u8]) -> u64 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as u64
}

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge(acc: u64, v: u64) -> u64 {
    (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with `seed` (Yann Collet's xxHash, the 64-bit variant).
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        let mut stripes = rest.chunks_exact(32);
        for stripe in &mut stripes {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, read_u64(&stripe[8 * i..]));
            }
        }
        rest = stripes.remainder();
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge(h, lane);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u64);
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        h = (h ^ round(0, read_u64(w)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    rest = words.remainder();
    if rest.len() >= 4 {
        h = (h ^ read_u32(rest).wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        rest = &rest[4..];
    }
    for &byte in rest {
        h = (h ^ (byte as u64).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Seed of the second half of a 128-bit key, so a key is two independent XXH64s.
const SECOND_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The name of one stored block: 128 bits of content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey(pub [u64; 2]);

impl BlockKey {
    /// The key of `bytes` (both halves hashed with different seeds).
    pub fn of(bytes: &[u8]) -> BlockKey {
        BlockKey([xxh64(bytes, 0), xxh64(bytes, SECOND_SEED)])
    }

    /// The key of this block's layer `layer` (one prefix has one block per layer).
    pub fn for_layer(self, layer: u32) -> BlockKey {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&self.0[0].to_le_bytes());
        bytes[8..16].copy_from_slice(&self.0[1].to_le_bytes());
        bytes[16..].copy_from_slice(&layer.to_le_bytes());
        BlockKey::of(&bytes)
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0[0], self.0[1])
    }
}

/// Keys of the blocks of a token sequence: block `i`'s key hashes the previous block's key
/// and block `i`'s tokens, so it names the whole prefix up to the end of block `i`.
/// `namespace` separates what else shapes the bytes (model, dtype, weights seed).
pub fn prefix_keys(namespace: &[u8], tokens: &[u32], block_size: usize) -> Vec<BlockKey> {
    let mut parent = BlockKey::of(namespace);
    tokens
        .chunks(block_size)
        .map(|block| {
            let mut bytes = Vec::with_capacity(16 + 4 * block.len());
            bytes.extend_from_slice(&parent.0[0].to_le_bytes());
            bytes.extend_from_slice(&parent.0[1].to_le_bytes());
            for t in block {
                bytes.extend_from_slice(&t.to_le_bytes());
            }
            parent = BlockKey::of(&bytes);
            parent
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_matches_the_reference_library() {
        // Values from libxxhash 0.8.1's XXH64 (Debian libxxhash0), called through ctypes.
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxh64(b"a", 0), 0xd24ec4f1a98c6e5b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc2cf5ad770999);
        assert_eq!(
            xxh64(b"Nobody inspects the spammish repetition", 0),
            0xfbcea83c8a378bf1
        );
        let mut long: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
        long.extend_from_slice(b"xyz");
        assert_eq!(xxh64(&long, 0), 0xe146cb31b65bc21a);
        let hundred: Vec<u8> = (0..100u8).collect();
        assert_eq!(xxh64(&hundred, 0x9E3779B97F4A7C15), 0x3b97d91eba03e785);
    }

    #[test]
    fn prefix_keys_name_the_whole_prefix() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b[40] = 9999; // differs in the third block of 16
        let ka = prefix_keys(b"model", &a, 16);
        let kb = prefix_keys(b"model", &b, 16);
        assert_eq!(ka.len(), 4);
        assert_eq!(ka[..2], kb[..2], "shared prefix, shared blocks");
        assert_ne!(ka[2], kb[2]);
        assert_ne!(ka[3], kb[3], "a later block depends on every earlier token");
        assert_ne!(prefix_keys(b"other", &a, 16)[0], ka[0]);
        assert_ne!(ka[0].for_layer(0), ka[0].for_layer(1));
        assert_eq!(ka[0].to_string().len(), 32);
    }
}
