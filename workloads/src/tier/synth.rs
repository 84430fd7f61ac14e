//! Deterministic synthetic tokens and their K, V and Q vectors. A vector depends only on the
//! seed, the layer and the token prefix up to its position (as in a real model), so blocks
//! with the same prefix hold the same bytes in every sequence and every run.

use super::hash::{xxh64, BlockKey};
use rand::{Rng, SeedableRng};

/// Token ids and prefix hashes of the sequences of one workload.
#[derive(Debug, Clone)]
pub struct Synth {
    seed: u64,
    shared_prefix: usize,
    /// `prefix[seq][pos]`: hash of tokens `0..=pos` of `seq`.
    prefix: Vec<Vec<u64>>,
}

impl Synth {
    /// Sequences of `len` tokens; the first `shared_prefix` tokens are the same in all.
    pub fn new(seed: u64, sequences: usize, len: usize, shared_prefix: usize) -> Synth {
        let prefix = (0..sequences)
            .map(|seq| {
                let mut h = xxh64(&seed.to_le_bytes(), 1);
                (0..len)
                    .map(|pos| {
                        let token = Self::token(seed, shared_prefix, seq, pos);
                        let mut bytes = [0u8; 12];
                        bytes[..8].copy_from_slice(&h.to_le_bytes());
                        bytes[8..].copy_from_slice(&token.to_le_bytes());
                        h = xxh64(&bytes, 2);
                        h
                    })
                    .collect()
            })
            .collect();
        Synth {
            seed,
            shared_prefix,
            prefix,
        }
    }

    /// Token id at `pos` of `seq`.
    pub fn token(seed: u64, shared_prefix: usize, seq: usize, pos: usize) -> u32 {
        let owner = if pos < shared_prefix {
            u64::MAX
        } else {
            seq as u64
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&owner.to_le_bytes());
        bytes[8..].copy_from_slice(&(pos as u64).to_le_bytes());
        (xxh64(&bytes, seed) % 32_000) as u32
    }

    /// Leading tokens shared by every sequence.
    pub fn shared_prefix(&self) -> usize {
        self.shared_prefix
    }

    /// Hash of tokens `0..=pos` of `seq`.
    pub fn prefix_hash(&self, seq: usize, pos: usize) -> u64 {
        self.prefix[seq][pos]
    }

    /// Content key of a block of `layer` whose last stored token is at `last_pos`: it names
    /// the whole prefix, the layer and what else shapes the bytes (`namespace`).
    pub fn block_key(&self, namespace: u64, seq: usize, layer: usize, last_pos: usize) -> BlockKey {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&namespace.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.prefix_hash(seq, last_pos).to_le_bytes());
        bytes[16..].copy_from_slice(&(last_pos as u64).to_le_bytes());
        BlockKey::of(&bytes).for_layer(layer as u32)
    }

    /// Fill `out` with values in [-1, 1) for (what, layer, seq, pos); `what` tells K, V and Q
    /// apart.
    fn fill(&self, what: u8, layer: usize, seq: usize, pos: usize, out: &mut [f32]) {
        let mut bytes = [0u8; 17];
        bytes[..8].copy_from_slice(&self.prefix_hash(seq, pos).to_le_bytes());
        bytes[8..16].copy_from_slice(&(layer as u64).to_le_bytes());
        bytes[16] = what;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(xxh64(&bytes, self.seed));
        for o in out {
            *o = rng.random_range(-1.0f32..1.0);
        }
    }

    /// K and V of every KV head (`kv_heads × head_dim` each) for the token at `pos`.
    pub fn kv(&self, layer: usize, seq: usize, pos: usize, k: &mut [f32], v: &mut [f32]) {
        self.fill(b'k', layer, seq, pos, k);
        self.fill(b'v', layer, seq, pos, v);
    }

    /// Q of every query head (`q_heads × head_dim`) for the token at `pos`.
    pub fn q(&self, layer: usize, seq: usize, pos: usize, q: &mut [f32]) {
        self.fill(b'q', layer, seq, pos, q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_gives_identical_vectors_and_keys() {
        let s = Synth::new(5, 2, 40, 20);
        let (mut a, mut b) = (vec![0f32; 8], vec![0f32; 8]);
        let (mut va, mut vb) = (vec![0f32; 8], vec![0f32; 8]);
        s.kv(3, 0, 19, &mut a, &mut va);
        s.kv(3, 1, 19, &mut b, &mut vb);
        assert_eq!((a.clone(), va.clone()), (b.clone(), vb.clone()));
        assert_eq!(s.block_key(1, 0, 3, 15), s.block_key(1, 1, 3, 15));
        s.kv(3, 1, 20, &mut b, &mut vb);
        s.kv(3, 0, 20, &mut a, &mut va);
        assert_ne!(a, b, "past the shared prefix the sequences differ");
        assert_ne!(s.block_key(1, 0, 3, 20), s.block_key(1, 1, 3, 20));
        assert_ne!(s.block_key(1, 0, 3, 15), s.block_key(1, 0, 4, 15));
        assert_ne!(s.block_key(1, 0, 3, 15), s.block_key(2, 0, 3, 15));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        // Another run with the same seed makes the same prefix.
        let again = Synth::new(5, 1, 40, 20);
        assert_eq!(again.prefix_hash(0, 39), s.prefix_hash(0, 39));
    }
}
