//! The byte encoding of stored state (postcard): journeys, cohorts and partition snapshots.
//! Encoding and decoding live together here so the store never disagrees with the engine.

use serde::{de::DeserializeOwned, Serialize};

pub use postcard::Error;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // most journeys fit: no regrowing (and copying) the buffer from 8 bytes up
    postcard::serialize_with_flavor(v, Bytes(Vec::with_capacity(256)))
        .expect("state types always serialize")
}

/// postcard's output into a `Vec` made to size, each string copied as one slice (postcard's
/// `to_extend` copies byte by byte through an iterator; its own `Vec` flavor starts empty).
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // varints come as slices too, mostly of one byte: no call to `memcpy` for those
        match data {
            [b] => self.0.push(*b),
            _ => self.0.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
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
}
