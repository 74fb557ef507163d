//! The socket_protocol frame decoder on arbitrary bytes in arbitrary chunks; every intact
//! message must re-encode and decode to an equal message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_wire::sp::{Decoder, Item};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = Decoder::with_max_body(1 << 20);
    let mut buf = BytesMut::new();
    'feed: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Item::Message(m))) => {
                    let mut again = BytesMut::from(&m.to_bytes().expect("encodes")[..]);
                    let back = Decoder::default().decode(&mut again).expect("re-decodes");
                    assert_eq!(back, Some(Item::Message(m)));
                }
                Ok(Some(Item::Damaged { .. })) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
});
