//! The vectors of docs/protocols/clever-show.md §8 (captured from the real module), both directions, and bad input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

use crate::testing::hex;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Decoding `wire` gives `frame`, and encoding `frame` gives `wire` exactly.
fn golden(wire_hex: &str, frame: Frame) {
    let wire = hex(wire_hex);
    let mut buf = BytesMut::from(&wire[..]);
    let got = Decoder::default()
        .decode(&mut buf)
        .unwrap()
        .expect("a whole frame");
    assert!(buf.is_empty());
    assert_eq!(got, frame);
    assert_eq!(
        frame.to_bytes().unwrap().as_ref(),
        &wire[..],
        "byte-identical encoding"
    );
}

#[test]
fn b8_1_action_start() {
    golden("00907b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2034382c20226d6573736167652d74797065223a20226d657373616765222c2022616374696f6e223a20227374617274227d7b2261726773223a205b5d2c20226b7761726773223a207b2274696d65223a2022313730303030303030302e35227d7d",
        Frame::action("start", vec![], obj(json!({"time": "1700000000.5"}))));
}

#[test]
fn b8_2_request_id() {
    golden("007d7b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2037332c20226d6573736167652d74797065223a202272657175657374227d7b227265717565737465645f76616c7565223a20226964222c2022726571756573745f6964223a202230303432222c202261726773223a205b5d2c20226b7761726773223a207b7d7d",
        Frame::request("id", "0042", vec![], Map::new()));
}

#[test]
fn b8_3_response_id() {
    golden("00ad7b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2032332c20226d6573736167652d74797065223a2022726573706f6e7365222c20227265717565737465645f76616c7565223a20226964222c2022726571756573745f6964223a202230303432227d7b2276616c7565223a2022636f7074657230303031227d",
        Frame::response("id", "0042", Content::Json(json!("copter0001"))));
}

#[test]
fn b8_4_file_push() {
    golden("00b27b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a202262696e617279222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a20362c20226d6573736167652d74797065223a20226d657373616765222c2022616374696f6e223a202266696c657472616e73666572222c202266696c6570617468223a20222f746d702f782e747874227d68656c6c6f0a",
        Frame::file_push("/tmp/x.txt", Bytes::from_static(b"hello\n")));
}

#[test]
fn b8_5_file_pull_request() {
    golden("007e7b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a203131342c20226d6573736167652d74797065223a202272657175657374227d7b227265717565737465645f76616c7565223a202266696c657472616e73666572222c2022726571756573745f6964223a202231323334222c202261726773223a205b5d2c20226b7761726773223a207b2266696c6570617468223a2022636f6e6669672f636c69656e742e696e69227d7d",
        Frame::request("filetransfer", "1234", vec![], obj(json!({"filepath": "config/client.ini"}))));
}

#[test]
fn b8_6_file_pull_response() {
    golden("00b87b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a202262696e617279222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a20332c20226d6573736167652d74797065223a2022726573706f6e7365222c20227265717565737465645f76616c7565223a202266696c657472616e73666572222c2022726571756573745f6964223a202231323334227d616263",
        Frame::response("filetransfer", "1234", Content::Binary(Bytes::from_static(b"abc"))));
}

#[test]
fn b8_7_discovery_broadcast() {
    golden("00957b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a203130362c20226d6573736167652d74797065223a20226d657373616765222c2022616374696f6e223a20227365727665725f6970227d7b2261726773223a205b5d2c20226b7761726773223a207b22686f7374223a20223132372e302e302e31222c2022706f7274223a20223235303030222c20226964223a202230303432222c202273746172745f74696d65223a2022313730303030303030302e30227d7d",
        Frame::action("server_ip", vec![], obj(json!({"host": "127.0.0.1", "port": "25000", "id": "0042", "start_time": "1700000000.0"}))));
}

#[test]
fn b8_8_buggy_resent_request_decodes() {
    golden("007d7b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2037372c20226d6573736167652d74797065223a202272657175657374227d7b227265717565737465645f76616c7565223a202274696d65222c2022726571756573745f6964223a202230303432222c202261726773223a206e756c6c2c20226b7761726773223a207b7d7d",
        Frame::new("request", Map::new(), Content::Json(json!({"requested_value": "time", "request_id": "0042", "args": null, "kwargs": {}}))));
}

#[test]
fn b8_9_non_ascii_counts_bytes() {
    golden("00927b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2034362c20226d6573736167652d74797065223a20226d657373616765222c2022616374696f6e223a202265786563757465227d7b2261726773223a205b5d2c20226b7761726773223a207b22636f6d6d616e64223a20226563686f20c3bc227d7d",
        Frame::action("execute", vec![], obj(json!({"command": "echo ü"}))));
}

/// A frame with a hand-written header.
fn raw(header: &str, content: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.extend_from_slice(&(header.len() as u16).to_be_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(content);
    b
}

const OK_KEYS: &str = r#""byteorder":"big","content-type":"json","content-encoding":"utf-8""#;

#[test]
fn any_key_order_whitespace_and_extra_keys() {
    let header = format!(
        r#"{{ "message-type" : "message", "action":"land", "zz":[1], "content-length":2, {OK_KEYS} }}"#
    );
    let f = Decoder::default()
        .decode(&mut raw(&header, b"{}"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            f.message_type.as_str(),
            f.extra_str("action"),
            &f.byteorder[..]
        ),
        ("message", Some("land"), "big")
    );
    assert_eq!(f.extra.get("zz"), Some(&json!([1])), "extra keys are kept");
}

#[test]
fn bad_headers_and_lengths() {
    let dec = || Decoder::with_max_content(1000);
    assert_eq!(
        dec().decode(&mut raw("", b"")),
        Err(DecodeError::HeaderNotJson),
        "header length 0"
    );
    assert_eq!(
        dec().decode(&mut raw("not json", b"")),
        Err(DecodeError::HeaderNotJson)
    );
    assert_eq!(
        dec().decode(&mut raw("[1,2]", b"")),
        Err(DecodeError::HeaderNotJson)
    );
    let missing = format!(r#"{{"content-length":0,{OK_KEYS}}}"#);
    assert_eq!(
        dec().decode(&mut raw(&missing, b"")),
        Err(DecodeError::MissingKey("message-type"))
    );
    for bad_len in ["-1", "1.5", "\"3\""] {
        let h = format!(r#"{{"content-length":{bad_len},"message-type":"message",{OK_KEYS}}}"#);
        assert_eq!(
            dec().decode(&mut raw(&h, b"")),
            Err(DecodeError::MissingKey("content-length")),
            "{bad_len}"
        );
    }
    let huge = format!(r#"{{"content-length":1001,"message-type":"message",{OK_KEYS}}}"#);
    assert_eq!(
        dec().decode(&mut raw(&huge, b"")),
        Err(DecodeError::TooLarge {
            declared: 1001,
            max: 1000
        })
    );
    // A length shorter than the JSON it covers: the cut content does not parse.
    let short = format!(r#"{{"content-length":5,"message-type":"message",{OK_KEYS}}}"#);
    assert_eq!(
        dec().decode(&mut raw(&short, br#"{"a": 1}"#)),
        Err(DecodeError::ContentNotJson)
    );
    // A header length pointing past the end just waits for more.
    let mut partial = raw(&short, b"");
    partial.truncate(10);
    assert_eq!(dec().decode(&mut partial), Ok(None));
}

#[test]
fn null_content_and_unknown_types_decode() {
    let h = format!(r#"{{"content-length":4,"message-type":"gossip",{OK_KEYS}}}"#);
    let f = Decoder::default()
        .decode(&mut raw(&h, b"null"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (f.message_type.as_str(), f.content),
        ("gossip", Content::Json(Value::Null))
    );
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let text = "[a-z0-9 ü/._-]{0,12}";
    prop_oneof![
        (text, proptest::collection::vec(text, 0..3)).prop_map(|(a, args)| {
            Frame::action(&a, args.into_iter().map(Value::from).collect(), Map::new())
        }),
        (text, "[0-9]{4}", text).prop_map(|(v, id, s)| Frame::request(
            &v,
            &id,
            vec![s.into()],
            Map::new()
        )),
        (
            text,
            "[0-9]{4}",
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(v, id, b)| Frame::response(&v, &id, Content::Binary(b.into()))),
        (text, proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(p, b)| Frame::file_push(&p, b.into())),
    ]
}

proptest! {
    #[test]
    fn round_trip_in_any_split(frames in proptest::collection::vec(arb_frame(), 1..5), cut in 1usize..40) {
        let mut wire = BytesMut::new();
        for f in &frames { f.encode(&mut wire).unwrap(); }
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(cut) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() { got.push(f); }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        let mut dec = Decoder::default();
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

/// Found by the `clevershow_decoder` fuzz target: a 73-digit number in JSON content came out
/// as a different float after a decode/encode/decode round trip (serde_json's default
/// float parsing is not correctly rounded; the workspace enables `float_roundtrip`).
#[test]
fn fuzz_regression_long_numbers_survive_a_relay() {
    let wire = hex("007d7b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a2037332c20226d6573736167652d74797065223a202272657175657374227d3232323230323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232323232223a2264222c2022726571756573745f6964223a222030303432222c627974657f72646572726773223a207b7d7d");
    let mut buf = BytesMut::from(&wire[..]);
    let frame = Decoder::default()
        .decode(&mut buf)
        .unwrap()
        .expect("a frame");
    let again = frame.to_bytes().unwrap();
    let back = Decoder::default()
        .decode(&mut BytesMut::from(&again[..]))
        .unwrap()
        .unwrap();
    assert_eq!(back, frame);
}
