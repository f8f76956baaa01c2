//! Any bytes given to the JSON decoder: an event or a reject reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = deflect_proto::decode_json(data) {
        let again = deflect_proto::decode_json(&deflect_proto::encode_json(&e)).unwrap();
        assert_eq!(again, e);
    }
});
