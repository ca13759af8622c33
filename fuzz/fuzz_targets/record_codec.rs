//! Any bytes as a stored session record: decoding never panics, and what decodes encodes back
//! to the same bytes.
#![no_main]

use keepalive::session::SessionId;
use keepalive::store::local::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = SessionId::from_bytes([7; 16]);
    let _ = codec::expires_at(data);
    if let Ok(record) = codec::decode(id, data) {
        assert_eq!(codec::encode(&record), data);
    }
});
