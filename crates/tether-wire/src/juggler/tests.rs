//! The frames captured from hat-juggler 0.7.6 (docs/protocols/juggler.md §8) and hat-json's
//! diff vectors (§8.4).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn msg(text: &str) -> Message {
    Message::parse(serde_json::from_str(text).unwrap()).unwrap()
}

#[test]
fn python_messages_byte_for_byte() {
    // §8.1, both directions.
    for text in [
        r#"{"type": "request", "id": 1, "name": "add", "data": {"a": 1, "b": 2}}"#,
        r#"{"type": "response", "id": 1, "data": 3, "success": true}"#,
        r#"{"type": "response", "id": 2, "data": "boom: [1, 'x']", "success": false}"#,
        r#"{"type": "notify", "name": "hello", "data": {"x": 7, "u": "\u010d\u0107\u017e\u20ac\ud83d\ude00"}}"#,
        r#"{"type": "response", "id": 4, "data": null, "success": true}"#,
        r#"{"type": "state", "diff": [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/nested", "value": {"k~/": [null, true, 1.5]}}]}"#,
        r#"{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"a": 1, "list": [1, 2, 3, 4], "b": "two"}}]}"#,
    ] {
        assert_eq!(msg(text).to_json(), text);
    }
    let notify = Message::Notify {
        name: "hello".into(),
        data: json!({"x": 7, "u": "čćž€😀"}),
    };
    assert_eq!(
        notify.to_json(),
        r#"{"type": "notify", "name": "hello", "data": {"x": 7, "u": "\u010d\u0107\u017e\u20ac\ud83d\ude00"}}"#
    );
}

#[test]
fn segments_as_python_cuts_them() {
    // §8.2: server max_segment_size=10, response "x" * 25.
    let r = Message::Response {
        id: json!(1),
        data: json!("x".repeat(25)),
        success: true,
    };
    assert_eq!(
        segments(&r.to_json(), 10),
        [
            "1{\"type\": \"",
            "1response\",",
            "1 \"id\": 1, ",
            "1\"data\": \"x",
            "1xxxxxxxxxx",
            "1xxxxxxxxxx",
            "1xxxx\", \"su",
            "1ccess\": tr",
            "0ue}",
        ]
    );
    // Both sides at 20, with non-ASCII escaped first.
    let r = Message::Response {
        id: json!(1),
        data: json!({"echo": "Zagreb čćž"}),
        success: true,
    };
    assert_eq!(
        segments(&r.to_json(), 20),
        [
            r#"1{"type": "response","#,
            r#"1 "id": 1, "data": {""#,
            r#"1echo": "Zagreb \u010"#,
            r#"1d\u0107\u017e"}, "su"#,
            r#"0ccess": true}"#,
        ]
    );
    // A short message is one frame; cuts never split a character.
    assert_eq!(segments("{}", 65536), ["0{}"]);
    assert_eq!(segments("\"čž\"", 2), ["1\"č", "0ž\""]);
}

#[test]
fn reassembly_with_a_ping_in_the_middle() {
    // §8.2, raw client -> server.
    let frames = [
        "1{\"type\": \"request\", \"id\": 7, ",
        "1\"name\": \"uni\", ",
        "2mid",
        "0\"data\": \"č😀\"}",
    ];
    let mut r = Reassembler::new(1 << 20);
    let mut pongs = Vec::new();
    let mut got = None;
    for f in frames {
        match parse_frame(f).unwrap() {
            Package::Ping(p) => pongs.push(pong(p)),
            Package::Pong(_) => unreachable!(),
            Package::Segment { last, text } => {
                if let Some(v) = r.push(text, last).unwrap() {
                    got = Some(Message::parse(v).unwrap());
                }
            }
        }
    }
    assert_eq!(pongs, ["3mid"]);
    assert_eq!(
        got,
        Some(Message::Request {
            id: json!(7),
            name: Some("uni".into()),
            data: Some(json!("č😀")),
        })
    );
    assert_eq!(parse_frame("2").unwrap(), Package::Ping(""));
    assert_eq!(parse_frame("3ignored").unwrap(), Package::Pong("ignored"));
    // A cut inside a \u escape is fine: joining happens before parsing.
    let mut r = Reassembler::new(1 << 20);
    for (f, last) in [
        ("{\"type\": \"request\", ", false),
        ("\"id\": 1, \"name\": \"e\"", false),
        (", \"data\": \"Zagreb \\u", false),
        ("010d\\u0107\\u017e\"}", true),
    ] {
        if let Some(v) = r.push(f, last).unwrap() {
            assert_eq!(v["data"], "Zagreb čćž");
            assert_eq!(r.pending(), 0);
        }
    }
}

#[test]
fn bad_frames_and_messages_are_refused() {
    // §8.3.
    assert_eq!(parse_frame(""), Err(FrameError::Empty));
    assert_eq!(parse_frame("9hello"), Err(FrameError::UnknownHeader('9')));
    let e = parse_frame("{\"type\": \"request\"}").unwrap_err();
    assert!(e.to_string().contains("0.6 peer"), "{e}");
    let mut r = Reassembler::new(1 << 20);
    assert!(matches!(
        r.push("{not json", true),
        Err(FrameError::Json(_))
    ));
    let mut r = Reassembler::new(10);
    assert!(r.push("12345", false).unwrap().is_none());
    assert_eq!(
        r.push("123456", false),
        Err(FrameError::TooLarge { max: 10 })
    );
    assert_eq!(r.pending(), 0, "the oversized message is dropped");
    let parse = |t: &str| Message::parse(serde_json::from_str(t).unwrap());
    assert_eq!(
        parse(r#"{"type":"request","name":"x","data":1}"#),
        Err(MessageError::Field {
            kind: "request",
            field: "id"
        })
    );
    assert_eq!(
        parse(r#"{"type":"foo","id":1}"#),
        Err(MessageError::UnknownType("foo".into()))
    );
    assert_eq!(parse("[1]"), Err(MessageError::NotObject));
    assert_eq!(parse(r#"{"id":1}"#), Err(MessageError::NoType));
    assert_eq!(
        parse(r#"{"type":"request","id":1,"name":7,"data":1}"#),
        Err(MessageError::Field {
            kind: "request",
            field: "name"
        })
    );
    // No data, and a null or empty name (the echo), are for the server to answer.
    assert_eq!(
        parse(r#"{"type":"request","id":1,"name":"x"}"#),
        Ok(Message::Request {
            id: json!(1),
            name: Some("x".into()),
            data: None
        })
    );
    for name in ["null", "\"\""] {
        let m = parse(&format!(
            r#"{{"type":"request","id":5,"name":{name},"data":[1]}}"#
        ));
        assert_eq!(
            m,
            Ok(Message::Request {
                id: json!(5),
                name: None,
                data: Some(json!([1]))
            })
        );
    }
}

fn ops(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap()
}

#[test]
fn hat_json_diff_vectors() {
    // §8.4 (src, dst, diff), with paths and values as hat-json writes them.
    let cases: &[(&str, &str, &str)] = &[
        (
            "null",
            r#"{"a":1}"#,
            r#"[{"op":"replace","path":"","value":{"a":1}}]"#,
        ),
        (
            r#"{"a":1}"#,
            "null",
            r#"[{"op":"replace","path":"","value":null}]"#,
        ),
        ("1", "1.0", "[]"),
        ("1", "true", r#"[{"op":"replace","path":"","value":true}]"#),
        (
            r#"{"a":1,"b":2}"#,
            r#"{"b":3,"c":4}"#,
            r#"[{"op":"remove","path":"/a"},{"op":"replace","path":"/b","value":3},{"op":"add","path":"/c","value":4}]"#,
        ),
        (
            "{}",
            r#"{"a":1}"#,
            r#"[{"op":"replace","path":"","value":{"a":1}}]"#,
        ),
        (
            r#"{"a":1}"#,
            "{}",
            r#"[{"op":"replace","path":"","value":{}}]"#,
        ),
        (
            "[1,2,3]",
            "[1,2,3,4]",
            r#"[{"op":"add","path":"/3","value":4}]"#,
        ),
        (
            "[1,2,3]",
            "[0,1,2,3]",
            r#"[{"op":"add","path":"/0","value":0}]"#,
        ),
        ("[1,2,3]", "[1,3]", r#"[{"op":"remove","path":"/1"}]"#),
        (
            "[1,2,3]",
            "[3]",
            r#"[{"op":"remove","path":"/0"},{"op":"remove","path":"/0"}]"#,
        ),
        (
            "[1,2,3]",
            "[4,5,6]",
            r#"[{"op":"replace","path":"/0","value":4},{"op":"replace","path":"/1","value":5},{"op":"replace","path":"/2","value":6}]"#,
        ),
        (
            "[1,2,3]",
            "[9,8]",
            r#"[{"op":"remove","path":"/0"},{"op":"replace","path":"/0","value":9},{"op":"replace","path":"/1","value":8}]"#,
        ),
        (
            "[1,2]",
            "[7,8,9,10]",
            r#"[{"op":"add","path":"/0","value":7},{"op":"add","path":"/1","value":8},{"op":"replace","path":"/2","value":9},{"op":"replace","path":"/3","value":10}]"#,
        ),
        (
            r#"[{"x":1}]"#,
            r#"[{"x":2}]"#,
            r#"[{"op":"replace","path":"/0/x","value":2}]"#,
        ),
        (
            r#"{"a/b":1,"m~n":2}"#,
            r#"{"a/b":5}"#,
            r#"[{"op":"remove","path":"/m~0n"},{"op":"replace","path":"/a~1b","value":5}]"#,
        ),
        (
            "\"s\"",
            "[\"s\"]",
            r#"[{"op":"replace","path":"","value":["s"]}]"#,
        ),
        // hat-json gives this for elements that are the same objects; we compare by value,
        // so equal elements always count as the same.
        (
            r#"[{"x":1},{"y":2}]"#,
            r#"[{"x":1},{"y":2},{"z":3}]"#,
            r#"[{"op":"add","path":"/2","value":{"z":3}}]"#,
        ),
        // §8.1: set(['list'], [1,3,4]) on [1,2,3,4].
        (
            r#"{"list":[1,2,3,4]}"#,
            r#"{"list":[1,3,4]}"#,
            r#"[{"op":"remove","path":"/list/1"}]"#,
        ),
    ];
    for (src, dst, want) in cases {
        let (src, dst): (Value, Value) = (
            serde_json::from_str(src).unwrap(),
            serde_json::from_str(dst).unwrap(),
        );
        let got = diff(&src, &dst);
        assert_eq!(got, ops(want), "{src} => {dst}");
        let applied = patch(&src, &Value::Array(got)).unwrap();
        assert_eq!(diff(&applied, &dst), Vec::<Value>::new(), "{src} => {dst}");
    }
}

#[test]
fn patch_takes_every_rfc_6902_operation_and_hats_extras() {
    let doc = json!({"a": [1, 2], "b": {"c": 1}});
    let p = |o: Value| patch(&doc, &o);
    assert_eq!(
        p(json!([{"op": "remove", "path": ""}])).unwrap(),
        Value::Null
    );
    assert_eq!(
        p(json!([{"op": "add", "path": "/a/2", "value": 3}, {"op": "add", "path": "/a/-", "value": 4}])).unwrap()["a"],
        json!([1, 2, 3, 4])
    );
    assert_eq!(
        p(json!([{"op": "move", "from": "/b/c", "path": "/d"}])).unwrap(),
        json!({"a": [1, 2], "b": {}, "d": 1})
    );
    assert_eq!(
        p(json!([{"op": "copy", "from": "/a", "path": "/b/a"}])).unwrap()["b"],
        json!({"c": 1, "a": [1, 2]})
    );
    assert_eq!(
        p(json!([{"op": "test", "path": "/b/c", "value": 1.0}])).unwrap(),
        doc
    );
    // Replace keeps the key where it was.
    let r = p(json!([{"op": "replace", "path": "/a", "value": 0}])).unwrap();
    assert_eq!(
        r.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["a", "b"]
    );
    for (bad, why) in [
        (
            json!([{"op": "test", "path": "/b/c", "value": 2}]),
            "test failed",
        ),
        (
            json!([{"op": "replace", "path": "/x", "value": 2}]),
            "invalid object key",
        ),
        (
            json!([{"op": "add", "path": "/a/5", "value": 2}]),
            "out of range",
        ),
        (
            json!([{"op": "add", "path": "/x/y", "value": 2}]),
            "invalid object key",
        ),
        (json!([{"op": "jump", "path": ""}]), "unsupported operation"),
        (
            json!([{"op": "add", "path": "a", "value": 1}]),
            "does not start with '/'",
        ),
        (json!([{"op": "add", "path": "/q"}]), "no \"value\""),
        (json!({"op": "add"}), "must be an array"),
    ] {
        let e = p(bad.clone()).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-c~/]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-d~/]{1,2}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn a_diff_applied_to_its_source_gives_its_destination(a in json_value(), b in json_value()) {
        let d = diff(&a, &b);
        prop_assert!(d.iter().all(|o| matches!(o["op"].as_str(), Some("add" | "remove" | "replace"))));
        let applied = patch(&a, &Value::Array(d)).unwrap();
        prop_assert_eq!(applied, b);
    }
}

/// Reading a message straight from its text ([`Parsed`], what the gateway and client do)
/// gives the same answer as [`Message::parse`] of its `Value`, for good messages, bad ones,
/// non-objects, unknown and repeated keys; invalid JSON stays a JSON error.
#[test]
fn parsed_from_text_agrees_with_parse_of_the_value() {
    for text in [
        r#"{"type": "request", "id": 1, "name": "add", "data": {"a": 1, "b": [2, {"type": 3}]}}"#,
        r#"{"type": "request", "id": 1, "name": null, "data": null}"#,
        r#"{"type": "request", "id": 1, "name": ""}"#,
        r#"{"type": "request", "name": "x", "data": 1}"#,
        r#"{"type": "request", "id": 1, "name": 5, "data": 1}"#,
        r#"{"type": "response", "id": 2, "data": "boom", "success": false, "extra": [1, {"a": null}]}"#,
        r#"{"type": "response", "id": 2, "success": "yes"}"#,
        r#"{"type": "state", "diff": [{"op": "replace", "path": "", "value": 1}]}"#,
        r#"{"type": "state", "diff": {}}"#,
        r#"{"type": "notify", "name": "n", "data": "\u010d\ud83d\ude00"}"#,
        r#"{"type": "notify", "data": 1}"#,
        r#"{"type": "nope"}"#,
        r#"{"type": 1}"#,
        r#"{"id": 1}"#,
        r#"{"type": "request", "id": 1, "type": "response", "success": true, "id": 2}"#,
        r#"{}"#,
        r#"[{"type": "request", "id": 1, "data": 1}]"#,
        r#""request""#,
        "1",
        "-1",
        "1.5",
        "true",
        "null",
    ] {
        let by_value = Message::parse(serde_json::from_str(text).unwrap());
        let Parsed(direct) = serde_json::from_str(text).unwrap();
        assert_eq!(direct, by_value, "{text}");
    }
    for bad in ["{not json", r#"{"type": "request""#, r#"{"a": 1} 2"#, ""] {
        assert!(serde_json::from_str::<Parsed>(bad).is_err(), "{bad}");
        let mut r = Reassembler::new(1 << 20);
        assert!(matches!(
            r.push_as::<Parsed>(bad, true),
            Err(FrameError::Json(_))
        ));
    }
}

proptest! {
    #[test]
    fn parsed_agrees_with_parse_on_arbitrary_objects(
        kind in prop_oneof![Just(json!("request")), Just(json!("response")), Just(json!("state")),
                            Just(json!("notify")), json_value()],
        fields in prop::collection::vec(
            (prop_oneof![Just("id".to_string()), Just("name".to_string()), Just("data".to_string()),
                         Just("success".to_string()), Just("diff".to_string()), "[a-d]{1,3}"],
             json_value()),
            0..6),
        typed in any::<bool>(),
    ) {
        let mut text = String::from("{");
        if typed {
            text += &format!("\"type\": {kind}");
        }
        for (i, (k, v)) in fields.iter().enumerate() {
            if typed || i > 0 {
                text += ", ";
            }
            text += &format!("{}: {v}", Value::from(k.as_str()));
        }
        text += "}";
        let by_value = Message::parse(serde_json::from_str(&text).unwrap());
        let Parsed(direct) = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(direct, by_value, "{}", text);
    }
}
