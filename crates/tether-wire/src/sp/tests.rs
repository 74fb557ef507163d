//! The vectors of docs/protocols/socket-protocol.md §5 (computed independently with Python's
//! `json` and `binascii.crc32`), streaming, and bad input.

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

use crate::testing::hex;

/// Decoding `wire` gives `msg`, and encoding `msg` gives `wire` exactly.
fn golden(wire_hex: &str, msg: Message) {
    let wire = hex(wire_hex);
    let mut buf = BytesMut::from(&wire[..]);
    let got = Decoder::default().decode(&mut buf).unwrap().expect("whole");
    assert!(buf.is_empty());
    assert_eq!(got, Item::Message(msg.clone()));
    assert_eq!(
        msg.to_bytes().unwrap().as_ref(),
        &wire[..],
        "byte-identical"
    );
}

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn v5_1_read_request() {
    golden("5350000000347b22737461747573223a302c22736572766963655f6964223a31302c22646174615f6964223a312c2264617461223a6e756c6c7df9de5681",
        Message::new(sid::READ_REQUEST, 1, Value::Null));
}

#[test]
fn v5_2_seed_request() {
    golden("5350000000337b22737461747573223a302c22736572766963655f6964223a302c22646174615f6964223a302c2264617461223a6e756c6c7d9faab736",
        Message::new(sid::AUTH_REQUEST, did::AUTH_SEED, Value::Null));
}

#[test]
fn v5_3_seed() {
    golden("5350000000717b22737461747573223a302c22736572766963655f6964223a312c22646174615f6964223a302c2264617461223a2230303131323233333434353536363737383839396161626263636464656566663030313132323333343435353636373738383939616162626363646465656666227de8052f0f",
        Message::new(sid::AUTH_RESPONSE, did::AUTH_SEED,
            json!("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")));
}

#[test]
fn v5_4_channel_name() {
    golden("5350000000377b22737461747573223a302c22736572766963655f6964223a382c22646174615f6964223a302c2264617461223a2267726f756e64227da227e497",
        Message::new(sid::CHANNEL_NAME_REQUEST, did::CHANNEL_NAME, json!("ground")));
}

#[test]
fn v5_5_checksum_error_answer() {
    golden("5350000000347b22737461747573223a352c22736572766963655f6964223a31312c22646174615f6964223a312c2264617461223a6e756c6c7d568f6d83",
        Message::new(sid::READ_RESPONSE, 1, Value::Null).with_status(status::CHECKSUM_ERROR));
}

#[test]
fn v5_6_utf8_object_data() {
    golden("5350000000497b22737461747573223a302c22736572766963655f6964223a32302c22646174615f6964223a372c2264617461223a7b2274656d70223a32312e352c226e616d65223a22c3a9227d7d271440c6",
        Message::new(sid::WRITE_REQUEST, 7, json!({"temp": 21.5, "name": "é"})));
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut v = b"SP".to_vec();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&crc32(body).to_be_bytes());
    v
}

#[test]
fn any_key_order_unknown_keys_and_missing_data() {
    let wire = frame_of(br#"{"data_id": 3, "x": [1], "service_id": 30, "status": 0}"#);
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        Decoder::default().decode(&mut buf).unwrap(),
        Some(Item::Message(Message::new(30, 3, Value::Null)))
    );
}

#[test]
fn a_frame_split_anywhere_decodes_once_whole() {
    let a = Message::new(10, 1, json!({"k": "v"})).to_bytes().unwrap();
    let b = Message::new(11, 1, json!([1, 2, 3]))
        .with_status(2)
        .to_bytes()
        .unwrap();
    let wire = [a.as_ref(), b.as_ref()].concat();
    for cut in 0..=wire.len() {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = Vec::new();
        while let Some(i) = dec.decode(&mut buf).unwrap() {
            got.push(i);
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(i) = dec.decode(&mut buf).unwrap() {
            got.push(i);
        }
        assert_eq!(got.len(), 2, "cut at {cut}");
        assert!(buf.is_empty());
    }
}

#[test]
fn a_damaged_frame_is_skipped_whole_and_names_what_it_can() {
    let good = Message::new(10, 4, json!("abc")).to_bytes().unwrap();
    // A flipped bit inside the data string: still parses, checksum fails.
    let mut flipped = good.to_vec();
    let at = flipped.len() - TRAILER_LEN - 3;
    flipped[at] ^= 0x01;
    // A damaged body that no longer parses.
    let mut broken = good.to_vec();
    broken[HEADER_LEN] = b'[';
    let wire = [&flipped[..], &broken[..], &good[..]].concat();
    let mut buf = BytesMut::from(&wire[..]);
    let mut dec = Decoder::default();
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Some(Item::Damaged {
            ids: Some(Ids {
                status: 0,
                service_id: 10,
                data_id: 4
            })
        })
    );
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Some(Item::Damaged { ids: None })
    );
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Some(Item::Message(Message::new(10, 4, json!("abc")))),
        "the stream stays in step"
    );
}

#[test]
fn a_wrong_checksum_trailer_is_damage() {
    let mut wire = Message::new(10, 4, json!(1)).to_bytes().unwrap().to_vec();
    let n = wire.len();
    wire[n - 1] ^= 0xff;
    let mut buf = BytesMut::from(&wire[..]);
    assert!(matches!(
        Decoder::default().decode(&mut buf),
        Ok(Some(Item::Damaged { ids: Some(_) }))
    ));
}

#[test]
fn bad_magic_is_final_and_seen_at_the_first_two_bytes() {
    let mut buf = BytesMut::from(&b"GE"[..]);
    assert_eq!(
        Decoder::default().decode(&mut buf),
        Err(DecodeError::BadMagic(*b"GE"))
    );
    let mut buf = BytesMut::from(&b"S"[..]);
    assert_eq!(Decoder::default().decode(&mut buf), Ok(None));
}

#[test]
fn an_absurd_length_is_refused_before_buffering() {
    let mut buf = BytesMut::from(&b"SP\xff\xff\xff\xff"[..]);
    assert_eq!(
        Decoder::with_max_body(1024).decode(&mut buf),
        Err(DecodeError::TooLarge {
            declared: 0xffff_ffff,
            max: 1024
        })
    );
    assert!(buf.capacity() < 1 << 20, "nothing reserved for it");
}

#[test]
fn an_intact_frame_that_is_not_a_message_is_final() {
    for (body, why) in [
        (&b"not json"[..], Malformed::NotJson),
        (b"[1,2]", Malformed::NotAnObject),
        (
            br#"{"status":0,"service_id":-1,"data_id":0}"#,
            Malformed::BadKey("service_id"),
        ),
        (
            br#"{"status":0,"service_id":1,"data_id":4294967296}"#,
            Malformed::BadKey("data_id"),
        ),
        (
            br#"{"service_id":1,"data_id":1}"#,
            Malformed::BadKey("status"),
        ),
        (
            br#"{"status":"0","service_id":1,"data_id":1}"#,
            Malformed::BadKey("status"),
        ),
    ] {
        let mut buf = BytesMut::from(&frame_of(body)[..]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Err(DecodeError::Malformed(why)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn auth_states_carry_the_seeds_numbers_and_names() {
    for n in 0..=4 {
        let s = AuthState::from_number(n).unwrap();
        assert_eq!(s.number(), n);
    }
    assert_eq!(AuthState::from_number(5), None);
    assert_eq!(AuthState::Trusted.name(), "Trusted Connection");
    assert_eq!(
        AuthState::SeedRequested.to_string(),
        "Seed was requested (1)"
    );
    assert_eq!(status::name(status::CHECKSUM_ERROR), Some("checksum error"));
    assert_eq!(status::name(7), None);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_message_round_trips_in_any_chunks(
        st in any::<u32>(), s in any::<u32>(), d in any::<u32>(), data in json_value(),
        chunk in 1usize..40,
    ) {
        let msg = Message { status: st, service_id: s, data_id: d, data };
        let wire = msg.to_bytes().unwrap();
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(i) = dec.decode(&mut buf).unwrap() { got.push(i); }
        }
        prop_assert_eq!(got, vec![Item::Message(msg)]);
    }

    #[test]
    fn any_single_byte_corruption_of_the_body_or_checksum_is_caught(
        data in json_value(), pos in any::<prop::sample::Index>(), flip in 1u8..=255,
    ) {
        let msg = Message::new(10, 1, data);
        let mut wire = msg.to_bytes().unwrap().to_vec();
        let at = HEADER_LEN + pos.index(wire.len() - HEADER_LEN);
        wire[at] ^= flip;
        let mut buf = BytesMut::from(&wire[..]);
        let got = Decoder::default().decode(&mut buf).unwrap();
        prop_assert!(matches!(got, Some(Item::Damaged { .. })), "{:?}", got);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut with_magic = b"SP".to_vec();
        with_magic.extend_from_slice(&bytes);
        for wire in [bytes, with_magic] {
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = Decoder::with_max_body(1 << 16);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}
