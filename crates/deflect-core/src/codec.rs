//! The byte encoding of stored state (postcard): pending events, journeys and partition snapshots.
//! Encoding and decoding live together here so the store never disagrees with the engine.

use serde::{de::DeserializeOwned, Serialize};

pub use postcard::Error;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // most journeys fit: no regrowing (and copying) the buffer from 8 bytes up
    postcard::to_extend(v, Vec::with_capacity(256)).expect("state types always serialize")
}

/// Appends the encoding of `v` to `buf`.
pub fn encode_into<T: Serialize>(v: &T, buf: &mut Vec<u8>) {
    let b = std::mem::take(buf);
    *buf = postcard::to_extend(v, b).expect("state types always serialize");
}

/// `n` values encoded back to back by [`encode_into`], as [`encode`] writes a `Vec` of them.
pub fn encode_seq(n: usize, encoded: &[u8]) -> Vec<u8> {
    let mut out = postcard::to_extend(&n, Vec::with_capacity(encoded.len() + 10))
        .expect("a length always serializes");
    out.extend_from_slice(encoded);
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Journeys hold [`crate::event::Text`] where they held `String`: stored state keeps its
    /// bytes both ways (no new state format), short and long (inline and allocated) alike.
    #[test]
    fn text_is_stored_as_a_string() {
        for s in ["", "c1", "a-contact-id-longer-than-twenty-four-bytes"] {
            let text = crate::event::Text::from(s);
            assert_eq!(encode(&text), encode(&s.to_string()));
            assert_eq!(
                decode::<crate::event::Text>(&encode(&s.to_string())).unwrap(),
                s
            );
        }
    }

    #[test]
    fn a_sequence_built_value_by_value_decodes_as_a_vec() {
        for n in [0usize, 1, 3, 127, 128, 300] {
            let values: Vec<(u64, String)> =
                (0..n as u64).map(|i| (i * 977, i.to_string())).collect();
            let mut buf = Vec::new();
            for v in &values {
                encode_into(v, &mut buf);
            }
            let seq = encode_seq(values.len(), &buf);
            assert_eq!(seq, encode(&values), "n = {n}");
            assert_eq!(decode::<Vec<(u64, String)>>(&seq).unwrap(), values);
        }
    }
}
