//! The VSOA stream decoder on arbitrary bytes fed in arbitrary chunks, and the datagram
//! decoder on the same bytes. Whatever decodes must re-encode to an equal packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_wire::vsoa::{Decoder, Packet};

fn round_trip(p: &Packet) {
    let again = p.to_bytes().expect("a decoded packet re-encodes");
    let mut buf = BytesMut::from(&again[..]);
    let back = Decoder::new().decode(&mut buf).expect("re-decodes").expect("whole");
    assert_eq!(&back, p);
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the chunk size, so splits vary with the input.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    'feed: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => round_trip(&p),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    if let Ok(p) = Decoder::new().decode_datagram(bytes::Bytes::copy_from_slice(rest)) {
        round_trip(&p);
    }
});
