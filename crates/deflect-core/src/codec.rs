//! The byte encoding of stored state (postcard): pending events, journeys and partition snapshots.
//! Encoding and decoding live together here so the store never disagrees with the engine.

use serde::{de::DeserializeOwned, Serialize};

pub use postcard::Error;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state types always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes)
}
