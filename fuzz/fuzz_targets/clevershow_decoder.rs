//! The clever-show frame decoder on arbitrary bytes in arbitrary chunks; whatever decodes
//! must re-encode and decode to an equal frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_wire::clevershow::{Decoder, Frame};

fn round_trip(f: &Frame) {
    let Ok(bytes) = f.to_bytes() else { return }; // a header over 65535 bytes after re-encoding
    let mut buf = BytesMut::from(&bytes[..]);
    let back = Decoder::default().decode(&mut buf).expect("re-decodes").expect("whole");
    assert_eq!(&back, f);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = Decoder::with_max_content(1 << 20);
    let mut buf = BytesMut::new();
    'feed: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => round_trip(&f),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
});
