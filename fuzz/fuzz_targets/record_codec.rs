//! Any bytes as a stored session record: decoding never panics, what decodes encodes to a
//! record that decodes the same, and a record in the current format encodes back to the same
//! bytes (one in the first format is rewritten in the current one).
#![no_main]

use keepalive::session::SessionId;
use keepalive::store::local::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = SessionId::from_bytes([7; 16]);
    let _ = codec::expires_at(data);
    let _ = codec::user(data);
    if let Ok(record) = codec::decode(id, data) {
        let bytes = codec::encode(&record);
        assert_eq!(codec::decode(id, &bytes).ok(), Some(record));
        if data.first() == Some(&codec::VERSION) {
            assert_eq!(bytes, data);
        }
    }
});
