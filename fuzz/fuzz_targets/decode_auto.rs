//! Format detection plus either decoder, as the pipeline calls it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = deflect_proto::decode(data, deflect_proto::Format::Auto);
});
