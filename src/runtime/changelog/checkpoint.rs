//! The checkpoint record's format and the order-independent [`StateDigest`] it carries.

use super::ChangelogError;

/// The key of checkpoint records. Starts with a NUL byte, which the services refuse in keys of
/// input events, so it can never be a user's key.
pub const CHECKPOINT_KEY: &[u8] = b"\0leadscore.checkpoint";

/// Encoding version of checkpoint records written now. Version 1 (`[1][next input offset]
/// [app]`) had no [`StateDigest`]; version 2 (`[2][next input offset][keys][digest][app]`, all
/// integers big-endian) has. Both decode.
const CHECKPOINT_VERSION: u8 = 2;

/// The first checkpoint version, still decoded (a restart after an upgrade reads them).
const CHECKPOINT_V1: u8 = 1;

/// What a checkpoint record says: where the input resumes, what the partition's state is as of
/// it, and service-specific metadata (the scorer's partition clock).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The next input offset to process on this partition.
    pub next_input_offset: i64,
    /// The partition's whole state as of this checkpoint (what a restore from the changelog
    /// yields), so that a warm restart can check its local copy against it; `None` in records
    /// of version 1, which predate it.
    pub state: Option<StateDigest>,
    pub app: Vec<u8>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25 + self.app.len());
        match self.state {
            Some(state) => {
                v.push(CHECKPOINT_VERSION);
                v.extend_from_slice(&self.next_input_offset.to_be_bytes());
                v.extend_from_slice(&state.keys.to_be_bytes());
                v.extend_from_slice(&state.sum.to_be_bytes());
            }
            // Nothing to vouch for: the old layout says exactly that.
            None => {
                v.push(CHECKPOINT_V1);
                v.extend_from_slice(&self.next_input_offset.to_be_bytes());
            }
        }
        v.extend_from_slice(&self.app);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, ChangelogError> {
        let be = |b: &[u8]| {
            let mut o = [0u8; 8];
            o.copy_from_slice(b);
            o
        };
        match bytes {
            [CHECKPOINT_VERSION, rest @ ..] if rest.len() >= 24 => Ok(Checkpoint {
                next_input_offset: i64::from_be_bytes(be(&rest[..8])),
                state: Some(StateDigest {
                    keys: u64::from_be_bytes(be(&rest[8..16])),
                    sum: u64::from_be_bytes(be(&rest[16..24])),
                }),
                app: rest[24..].to_vec(),
            }),
            [CHECKPOINT_V1, rest @ ..] if rest.len() >= 8 => Ok(Checkpoint {
                next_input_offset: i64::from_be_bytes(be(&rest[..8])),
                state: None,
                app: rest[8..].to_vec(),
            }),
            _ => Err(ChangelogError::BadCheckpoint),
        }
    }
}

/// A partition's state in two numbers: how many keys it has, and the wrapping sum of
/// [`entry_hash`] over its (key, value) pairs. The sum does not depend on order and one entry
/// can be added, removed or replaced in O(1), so the services keep it up to date as keys change
/// (checkpoints stay cheap) and a restore computes it while it reads every entry anyway.
///
/// It detects accidental loss or damage (a missing partition, missing files, a stale or
/// foreign copy), not tampering: the hash is fast, not cryptographic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StateDigest {
    pub keys: u64,
    pub sum: u64,
}

impl StateDigest {
    /// A key with value hash `hash` was added.
    pub fn insert(&mut self, hash: u64) {
        self.keys = self.keys.wrapping_add(1);
        self.sum = self.sum.wrapping_add(hash);
    }

    /// A key whose value hashed to `hash` was removed.
    pub fn remove(&mut self, hash: u64) {
        self.keys = self.keys.wrapping_sub(1);
        self.sum = self.sum.wrapping_sub(hash);
    }

    /// A key's value changed from one hashing to `old` to one hashing to `new`.
    pub fn replace(&mut self, old: u64, new: u64) {
        self.sum = self.sum.wrapping_sub(old).wrapping_add(new);
    }

    /// The digest of `entries`.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> StateDigest {
        let mut d = StateDigest::default();
        for (k, v) in entries {
            d.insert(entry_hash(k, v));
        }
        d
    }
}

/// The 64-bit hash of one (key, value bytes) pair that [`StateDigest`] sums; never 0, so a
/// caller can use 0 for "no entry".
///
/// It is part of the checkpoint format (version 2): changing it makes every stored digest
/// disagree, so a change needs a new checkpoint version. Eight bytes at a time (an FxHash-style
/// rotate, xor, multiply), the lengths mixed in so that key and value cannot trade bytes, then
/// MurmurHash3's finalizer so every input bit reaches every output bit. About as fast as
/// copying the value, which matters at a million keys per restore.
pub fn entry_hash(key: &str, value: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut b = [0u8; 8];
            b[..tail.len()].copy_from_slice(tail);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
    }
    let mut h = absorb(absorb(0x6c65_6164_7363_6f72, key.as_bytes()), value);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h.max(1)
}
