//! Kafka's default partitioner for keyed records (Java clients' `murmur2`, librdkafka's
//! `murmur2_random`): which partition a user's events land in. `leadscore simulate
//! --partitions N` uses it to reproduce the scorer's per-partition clocks offline, and
//! leadscore's own producers are configured with the same partitioner.

/// Kafka's murmur2 hash of `key` (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils`.
pub fn murmur2(key: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = key.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a keyed record among `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Apache Kafka's `UtilsTest.testMurmur2` / the Java client's partitioner.
    #[test]
    fn matches_kafkas_java_murmur2() {
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for i in 0..1000 {
            let k = format!("user-{i:06}");
            let p = partition_for(k.as_bytes(), 6);
            assert!((0..6).contains(&p));
            assert_eq!(p, partition_for(k.as_bytes(), 6));
        }
    }
}
