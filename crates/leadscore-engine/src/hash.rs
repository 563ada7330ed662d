//! The hasher of the maps keyed by user id (the partition's user store, the scorer's keyed
//! state): a lookup per event, so `std`'s SipHash-1-3 was a tenth of the partition path.
//!
//! User ids come from the input, so a fixed hash (FxHash as is) would let a producer pick ids
//! that all land in one bucket and turn every lookup into a scan (hash flooding). This hasher
//! keeps two secret words drawn once per map from `std`'s `RandomState` (OS randomness) and mixes
//! every 16 bytes with a folded 64x64->128-bit multiply against them, as foldhash and wyhash do:
//! several times faster than SipHash on short ids, and an attacker who cannot see the words
//! cannot compute colliding ids offline. It is not a cryptographic MAC; SipHash remains the
//! answer for maps whose keys an attacker can also time. Hashes are never stored or sent:
//! they differ between processes, unlike [`crate::state::stable_hash`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// A map keyed by user id with the seeded hasher.
pub type UserMap<V> = HashMap<String, V, SeededState>;

/// Builds [`SeededHasher`]s sharing one random seed.
#[derive(Clone, Copy, Debug)]
pub struct SeededState {
    seed: [u64; 2],
}

impl SeededState {
    pub fn new() -> SeededState {
        // `RandomState` draws its keys from the OS once per thread and varies them per instance:
        // two hashes of constants through it are two words nobody outside can predict.
        let keys = RandomState::new();
        SeededState {
            seed: [keys.hash_one(0x5eed_u64), keys.hash_one(0xfeed_u64) | 1],
        }
    }
}

impl Default for SeededState {
    fn default() -> SeededState {
        SeededState::new()
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;

    #[inline]
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher {
            h: self.seed[0],
            k: self.seed[1],
        }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct SeededHasher {
    h: u64,
    k: u64,
}

/// An odd constant with well-spread bits (the golden ratio's), so that no input word can cancel
/// the secret in the finishing multiply.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// The high and low halves of the full product, xored: every input bit reaches every output bit.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn half(s: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4])) as u64
}

impl Hasher for SeededHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.h;
        let mut s = bytes;
        while s.len() > 16 {
            h = fold_mul(word(s, 0) ^ h, word(s, 8) ^ self.k);
            s = &s[16..];
        }
        // The last 1 to 16 bytes as two words, with overlapping loads; the length goes into
        // the mix, so inputs that differ only by trailing zero bytes still differ.
        let n = s.len();
        let (a, b) = if n >= 8 {
            (word(s, 0), word(s, n - 8))
        } else if n >= 4 {
            (half(s, 0) << 32 | half(s, n - 4), 0)
        } else if n > 0 {
            let (x, y, z) = (s[0] as u64, s[n / 2] as u64, s[n - 1] as u64);
            (x << 16 | y << 8 | z, 0)
        } else {
            (0, 0)
        };
        self.h = fold_mul(
            a ^ h,
            b ^ self.k ^ (bytes.len() as u64).wrapping_mul(SPREAD),
        );
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.h = fold_mul(self.h ^ i, self.k ^ SPREAD);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.h, self.k ^ SPREAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every string of up to three bytes from a small alphabet, and ids of every length up to
    /// 40 that differ in one byte: all hash apart (a 64-bit collision among these would be a
    /// flaw in the mixing, not bad luck), and a map keyed by them finds each.
    #[test]
    fn distinct_keys_hash_apart_and_the_map_finds_each() {
        let alphabet = [b'\0', b'a', b'b', b'0', 0xff];
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        for len in 1..=3 {
            let mut next = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for c in alphabet {
                    let mut k = k.clone();
                    k.push(c);
                    next.push(k);
                }
            }
            keys.extend(next);
        }
        for len in 4..=40 {
            for at in [0, len / 2, len - 1] {
                let mut k = vec![b'u'; len];
                k[at] = b'v';
                keys.push(k);
                keys.push(vec![b'u'; len]);
            }
        }
        keys.sort();
        keys.dedup();
        let state = SeededState::new();
        let hashes: HashSet<u64> = keys
            .iter()
            .map(|k| {
                let mut h = state.build_hasher();
                h.write(k);
                h.finish()
            })
            .collect();
        assert_eq!(hashes.len(), keys.len());

        let mut map: UserMap<usize> = UserMap::default();
        let ids: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            map.insert(id.clone(), i);
        }
        assert!(ids
            .iter()
            .enumerate()
            .all(|(i, id)| map.get(id) == Some(&i)));
        assert_eq!(map.get("user-10000"), None);
    }

    #[test]
    fn the_seed_differs_between_maps() {
        let (a, b) = (SeededState::new(), SeededState::new());
        assert_ne!(a.hash_one("u1"), b.hash_one("u1"));
        assert_eq!(a.hash_one("u1"), a.hash_one("u1"));
    }
}
