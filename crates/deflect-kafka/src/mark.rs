//! Telling whether a partition's log is the log a stored state read.
//!
//! Offsets alone cannot tell: a topic deleted and created again, or a state directory pointed at
//! another cluster, has records at the offsets the state had read too, and they would be skipped
//! as already counted. The state therefore keeps a [`fingerprint`] of the last record it read,
//! and a restart reads the record at that offset again ([`records_at`]) and compares.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{reader_from, ClientSettings, Error};

/// FNV-1a's 64-bit offset basis and prime.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (64 bits) of `bytes`, continuing from `h`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// A fingerprint of a record's key and value: FNV-1a (64 bits) over each one's length (all ones
/// when absent, little-endian) and bytes. It is stored, so it must not change between builds or
/// versions (the standard library's hashers may).
pub fn fingerprint(key: Option<&[u8]>, payload: Option<&[u8]>) -> u64 {
    let mut h = FNV_BASIS;
    for part in [key, payload] {
        h = match part {
            Some(b) => fnv1a(fnv1a(h, &(b.len() as u64).to_le_bytes()), b),
            None => fnv1a(h, &u64::MAX.to_le_bytes()),
        };
    }
    h
}

/// What a partition holds at an offset asked for by [`records_at`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// A record at that offset, with its fingerprint.
    Record(u64),
    /// No record there: the first record read from it is at this other offset (retention or
    /// compaction removed it, or the log is shorter and reading restarted at its beginning).
    Elsewhere(i64),
    /// No record there, and none after it (a log that ends at or before the offset).
    End,
    /// No answer in time.
    Unknown,
}

/// Reads the record at each `(partition, offset)` of `topic` with a consumer of its own (no group,
/// nothing committed), for at most `timeout`, and says what is there.
pub fn records_at(
    settings: &ClientSettings,
    topic: &str,
    at: &[(i32, i64)],
    timeout: Duration,
) -> Result<BTreeMap<i32, At>, Error> {
    let mut found: BTreeMap<i32, At> = at.iter().map(|(p, _)| (*p, At::Unknown)).collect();
    if at.is_empty() {
        return Ok(found);
    }
    let wanted: BTreeMap<i32, i64> = at.iter().copied().collect();
    let from: Vec<(i32, Offset)> = at.iter().map(|(p, o)| (*p, Offset::Offset(*o))).collect();
    let consumer = reader_from(settings, topic, &from)?;
    let deadline = Instant::now() + timeout;
    let mut open = wanted.len();
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let answer = match consumer.poll(left.min(Duration::from_millis(100))) {
            None => continue,
            Some(Ok(m)) if m.topic() == topic => {
                let want = wanted.get(&m.partition()).copied();
                let at = if want == Some(m.offset()) {
                    At::Record(fingerprint(m.key(), m.payload()))
                } else {
                    At::Elsewhere(m.offset())
                };
                (m.partition(), at)
            }
            Some(Ok(_)) => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => (p, At::End),
            Some(Err(e)) => {
                // retriable: the wait goes on until the deadline
                tracing::debug!(error = %e, "reading a record to check");
                continue;
            }
        };
        let (p, at) = answer;
        if let Some(slot) = found.get_mut(&p) {
            if *slot == At::Unknown {
                *slot = at;
                open -= 1;
                // the partition's answer is in: nothing more of it is fetched
                let mut one = TopicPartitionList::new();
                one.add_partition(topic, p);
                let _ = consumer.pause(&one);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // from the FNV reference (Fowler, Noll, Vo): the stored fingerprints depend on them
        assert_eq!(fnv1a(FNV_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_fingerprint_covers_the_key_the_value_and_their_boundary() {
        let mut framed = Vec::new();
        framed.extend_from_slice(&1u64.to_le_bytes());
        framed.extend_from_slice(b"k");
        framed.extend_from_slice(&2u64.to_le_bytes());
        framed.extend_from_slice(b"vv");
        assert_eq!(
            fingerprint(Some(b"k"), Some(b"vv")),
            fnv1a(FNV_BASIS, &framed)
        );
        assert_ne!(
            fingerprint(Some(b"kv"), Some(b"v")),
            fingerprint(Some(b"k"), Some(b"vv"))
        );
        assert_ne!(
            fingerprint(None, Some(b"v")),
            fingerprint(Some(b""), Some(b"v"))
        );
        assert_ne!(
            fingerprint(Some(b"k"), Some(b"v1")),
            fingerprint(Some(b"k"), Some(b"v2"))
        );
    }
}
