//! Any bytes given to the protobuf decoder: an event or a reject reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = deflect_proto::decode_protobuf(data) {
        // what decodes re-encodes and decodes to the same event
        let again = deflect_proto::decode_protobuf(&deflect_proto::encode_protobuf(&e)).unwrap();
        assert_eq!(again, e);
    }
});
