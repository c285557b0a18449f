//! The bloom filter of a footer: membership of `key_hash(team, session)` (docs/format.md,
//! "Footer"), ~1% false positives at 10 bits per key.

const BLOOM_BITS_PER_KEY: usize = 10;
/// Probes per key (what this version writes; a footer says its own).
pub(super) const BLOOM_K: u32 = 7;

/// A bloom filter over 64-bit key hashes (double hashing, k probes).
#[derive(Debug, Clone, Default)]
pub struct Bloom {
    pub(super) words: Vec<u64>,
    pub(super) k: u32,
}

impl Bloom {
    pub(super) fn build(keys: impl Iterator<Item = u64>, n: usize) -> Bloom {
        let words = (n * BLOOM_BITS_PER_KEY).div_ceil(64).max(1);
        let mut b = Bloom {
            words: vec![0; words],
            k: BLOOM_K,
        };
        for h in keys {
            let bits = b.words.len() as u64 * 64;
            for i in 0..b.k {
                let bit = probe(h, i) % bits;
                b.words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        b
    }

    pub fn may_contain(&self, h: u64) -> bool {
        let bits = self.words.len() as u64 * 64;
        (0..self.k).all(|i| {
            let bit = probe(h, i) % bits;
            self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// Heap bytes this filter holds in RAM.
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

fn probe(h: u64, i: u32) -> u64 {
    let h2 = h.rotate_left(32) | 1;
    h.wrapping_add((i as u64).wrapping_mul(h2))
}
