//! Picks a record's partition the way Kafka's Java client does for a keyed record, so rows
//! written by rowsync land where any Java producer would put the same key.

/// `toPositive(murmur2(key)) % partitions`, as `org.apache.kafka.clients.producer` computes it.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    // `hash` < 2^31 and `partitions` > 0, so the remainder fits an i32.
    (hash % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn hashes_match_kafkas_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, java) in cases {
            assert_eq!(
                murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32,
                java,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_follow_the_positive_hash() {
        // murmur2("21") = -973932308; toPositive = 1173551340.
        assert_eq!(partition_for_key(b"21", 3), 1_173_551_340 % 3);
        for key in [&b"1"[..], b"42", b"-7"] {
            let p = partition_for_key(key, 5);
            assert!((0..5).contains(&p));
        }
    }
}
