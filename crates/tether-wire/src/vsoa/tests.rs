//! Golden vectors from docs/protocols/vsoa.md §14 (real captures), error cases and property tests.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

use crate::testing::hex;

/// Decodes exactly one packet that must consume all of `wire`.
fn decode_one(wire: &[u8]) -> Packet {
    let mut buf = BytesMut::from(wire);
    let pkt = Decoder::new()
        .decode(&mut buf)
        .unwrap()
        .expect("whole packet");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    pkt
}

/// Checks that decoding `wire` gives `expected`, and that encoding `expected` reproduces
/// `wire` except for the pad bytes, which captured senders fill with garbage and we zero.
fn golden(wire: &[u8], expected: &Packet) {
    assert_eq!(&decode_one(wire), expected);
    let ours = expected.to_bytes().unwrap();
    assert_eq!(ours.len(), wire.len(), "encoded length");
    let unpadded = HEADER_LEN + expected.body_len();
    assert_eq!(&ours[..unpadded], &wire[..unpadded]);
    assert!(ours[unpadded..].iter().all(|&b| b == 0), "pad must be zero");
}

fn pkt(ptype: PacketType) -> Packet {
    Packet::new(ptype)
}

#[test]
fn v14_1_handshake_request() {
    let wire = hex("29 00 42 00 00000000 8d7b 0000 00000013 00000000
                    7b2270617373776422 3a22313233343536227d 00");
    let mut p = pkt(PacketType::ServInfo).with_param(&b"{\"passwd\":\"123456\"}"[..]);
    p.flags = Flags::TUNNEL;
    p.tunid = 36219;
    golden(&wire, &p);
}

#[test]
fn v14_2_handshake_reply_python() {
    let wire = hex("29 00 01 00 00000000 0000 0000 00000010 00000004
                    7b226e616d65223a22707973727622 7d 00000000");
    let p = Packet::reply_to(&pkt(PacketType::ServInfo), Status::SUCCESS)
        .with_param(&b"{\"name\":\"pysrv\"}"[..])
        .with_data(&[0u8, 0, 0, 0][..]);
    golden(&wire, &p);
}

#[test]
fn v14_2_handshake_reply_npm_with_pad() {
    let mut wire = hex("29 00 81 00 00000000 0000 0000 00000012 00000004");
    wire.extend_from_slice(b"{\"name\":\"nodesrv\"}");
    wire.extend_from_slice(&[0, 0, 0, 0, 0xaa, 0xbb]);
    let p = Packet::reply_to(&pkt(PacketType::ServInfo), Status::SUCCESS)
        .with_param(&b"{\"name\":\"nodesrv\"}"[..])
        .with_data(&[0u8, 0, 0, 0][..]);
    golden(&wire, &p);
}

#[test]
fn v14_2_npm_client_request() {
    let mut wire = hex("29 00 42 00 00000000 98b6 0000 00000023 00000000");
    wire.extend_from_slice(b"{\"passwd\":\"pw\",\"pingInterval\":1000}");
    wire.push(0x55);
    let mut p = pkt(PacketType::ServInfo)
        .with_param(&b"{\"passwd\":\"pw\",\"pingInterval\":1000}"[..])
        .with_tunid(0x98b6);
    p.flags = Flags::TUNNEL;
    golden(&wire, &p);
}

#[test]
fn v14_3_wrong_password_reply() {
    let wire = hex("29 00 01 01 00000000 00000000 00000000 00000000");
    golden(
        &wire,
        &Packet::reply_to(&pkt(PacketType::ServInfo), Status::PASSWORD),
    );
}

#[test]
fn v14_4_rpc_get_echo_and_reply() {
    let wire = hex("29 01 c0 00 00000000 0000 0005 00000011 00000003
                    2f6563686f 7b2268656c6c6f223a22776f726c64227d 010203 000000");
    let req = pkt(PacketType::Rpc)
        .with_url("/echo")
        .with_param(&b"{\"hello\":\"world\"}"[..])
        .with_data(&[1u8, 2, 3][..]);
    golden(&wire, &req);
    let rep_wire = hex("29 01 01 00 00000000 00000000 00000011 00000003
                        7b2268656c6c6f223a22776f726c64227d 010203");
    let rep = Packet::reply_to(&req, Status::SUCCESS)
        .with_param(req.param.clone())
        .with_data(req.data.clone());
    golden(&rep_wire, &rep);
}

#[test]
fn v14_5_rpc_set_with_garbage_pad() {
    let wire = hex("29 01 84 00 00000001 00000005 00000005 00000000 2f6563686f 2273747222 6c6f");
    let mut req = pkt(PacketType::Rpc)
        .with_url("/echo")
        .with_param(&b"\"str\""[..])
        .with_seqno(1);
    req.flags = Flags::SET;
    golden(&wire, &req);
    let rep_wire = hex("29 01 c1 00 00000001 00000000 00000005 00000000 2273747222 414243");
    let rep = Packet::reply_to(&req, Status::SUCCESS).with_param(&b"\"str\""[..]);
    golden(&rep_wire, &rep);
}

#[test]
fn v14_6_unknown_url() {
    let req_wire = hex("29 01 40 00 00000002 00000007 00000000 00000000 2f6e6f73756368 00");
    let req = pkt(PacketType::Rpc).with_url("/nosuch").with_seqno(2);
    golden(&req_wire, &req);
    let rep_wire = hex("29 01 01 03 00000002 00000000 00000000 00000000");
    golden(&rep_wire, &Packet::reply_to(&req, Status::INVALID_URL));
}

#[test]
fn v14_7_subscribe_forms() {
    let req_wire = hex("29 02 40 00 00000003 00000007 00000000 00000000 2f746f7069632f 00");
    let req = pkt(PacketType::Subscribe).with_url("/topic/").with_seqno(3);
    golden(&req_wire, &req);
    let rep_wire = hex("29 02 01 00 00000003 00000000 00000000 00000000");
    golden(&rep_wire, &Packet::reply_to(&req, Status::SUCCESS));
    let list_wire = hex("29 02 00 00 00000004 00000000 0000000c 00000000 5b222f78222c222f792f225d");
    let list = pkt(PacketType::Subscribe)
        .with_param(&b"[\"/x\",\"/y/\"]"[..])
        .with_seqno(4);
    golden(&list_wire, &list);
    // Fire-and-forget seqno and the UNSUBSCRIBE twin.
    let unsub_wire = hex("29 03 40 00 00010000 00000007 00000000 00000000 2f746f7069632f 00");
    let unsub = pkt(PacketType::Unsubscribe)
        .with_url("/topic/")
        .with_seqno(0x0001_0000);
    golden(&unsub_wire, &unsub);
}

#[test]
fn v14_8_publish_tcp_and_quick() {
    let wire = hex("29 04 c0 00 00000000 0000 0008 00000007 00000002
                    2f746f7069632f61 7b2276223a317d 0908 dead77");
    let p = pkt(PacketType::Publish)
        .with_url("/topic/a")
        .with_param(&b"{\"v\":1}"[..])
        .with_data(&[9u8, 8][..]);
    golden(&wire, &p);
    let quick = hex("29 04 40 00 00000000 00000006 00000005 00000000 2f746f706963 5b312c325d 00");
    let q = pkt(PacketType::Publish)
        .with_url("/topic")
        .with_param(&b"[1,2]"[..]);
    golden(&quick, &q);
    let d = Decoder::new().decode_datagram(Bytes::from(quick)).unwrap();
    assert_eq!(d, q);
}

#[test]
fn v14_9_datagrams() {
    let c_tcp =
        hex("29 05 c0 00 00000000 0000 0003 00000007 00000003 2f6467 7b2264223a317d 616263 000000");
    golden(
        &c_tcp,
        &pkt(PacketType::Datagram)
            .with_url("/dg")
            .with_param(&b"{\"d\":1}"[..])
            .with_data(&b"abc"[..]),
    );
    let c_quick =
        hex("29 05 40 00 0000004d 0000 0004 00000007 00000000 2f646771 7b2264223a327d 00");
    golden(
        &c_quick,
        &pkt(PacketType::Datagram)
            .with_url("/dgq")
            .with_param(&b"{\"d\":2}"[..])
            .with_seqno(77),
    );
    let s_tcp = hex("29 05 00 00 00000000 0000 0004 00000003 00000001 2f736467 227822 5a");
    golden(
        &s_tcp,
        &pkt(PacketType::Datagram)
            .with_url("/sdg")
            .with_param(&b"\"x\""[..])
            .with_data(&b"Z"[..]),
    );
    let s_quick = hex("29 05 40 00 00000000 0000 0005 00000000 00000002 2f73646771 5151 00");
    golden(
        &s_quick,
        &pkt(PacketType::Datagram)
            .with_url("/sdgq")
            .with_data(&b"QQ"[..]),
    );
}

#[test]
fn v14_10_ping_noop_qos() {
    let ping = pkt(PacketType::PingEcho).with_seqno(5);
    golden(
        &hex("29 ff 00 00 00000005 00000000 00000000 00000000"),
        &ping,
    );
    golden(
        &hex("29 ff 01 00 00000005 00000000 00000000 00000000"),
        &Packet::reply_to(&ping, Status::SUCCESS),
    );
    golden(
        &hex("29 fe 00 00 00010000 00000000 00000000 00000000"),
        &pkt(PacketType::Noop).with_seqno(0x0001_0000),
    );
    let mut qos = pkt(PacketType::QosSetup);
    qos.flags = Flags::REPLY;
    qos.status = Status(3);
    golden(
        &hex("29 06 01 03 00000000 00000000 00000000 00000000"),
        &qos,
    );
}

#[test]
fn v14_11_stream_setup_reply() {
    let req = pkt(PacketType::Rpc).with_url("/stream").with_seqno(8);
    golden(
        &hex("29 01 40 00 00000008 00000007 00000000 00000000 2f73747265616d 00"),
        &req,
    );
    let rep = Packet::reply_to(&req, Status::SUCCESS)
        .with_tunid(0x8bbd)
        .with_param(&b"{\"ok\":1}"[..]);
    assert_eq!(rep.flags, Flags::REPLY.with(Flags::TUNNEL));
    golden(
        &hex("29 01 03 00 00000008 8bbd 0000 00000008 00000000 7b226f6b223a317d"),
        &rep,
    );
}

#[test]
fn unknown_type_decodes_as_unknown() {
    let p = decode_one(&hex("29 42 00 00 00000001 00000000 00000000 00000000"));
    assert_eq!(p.ptype, PacketType::Unknown(0x42));
    assert_eq!(p.ptype.as_u8(), 0x42);
}

#[test]
fn unaligned_packet_without_pad_is_accepted() {
    // Python accepts an unpadded 23-byte packet; so do we (docs/protocols/vsoa.md §1).
    let wire = hex("29 01 00 00 00000009 0000 0003 00000000 00000000 2f6162");
    let p = decode_one(&wire);
    assert_eq!(&p.url[..], b"/ab");
}

#[test]
fn bad_magic_is_an_error() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert_eq!(
        Decoder::new().decode(&mut buf),
        Err(DecodeError::BadMagic { found: b'G' })
    );
}

#[test]
fn oversize_declared_length_is_refused_before_buffering() {
    // data_len = 262125: one byte over the limit with a 20-byte header and no pad.
    let mut buf = BytesMut::from(&hex("29 01 00 00 00000000 00000000 00000000 0003ffed")[..]);
    let err = Decoder::new().decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            declared: 262_145,
            max: MAX_PACKET_LEN
        }
    );
    // Maximal u32 lengths must not overflow.
    let mut buf = BytesMut::from(&hex("29 01 c0 00 00000000 0000 ffff ffffffff ffffffff")[..]);
    assert!(matches!(
        Decoder::new().decode(&mut buf),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn packet_at_the_limit_round_trips() {
    let p = pkt(PacketType::Rpc)
        .with_url("/echo")
        .with_data(vec![7u8; MAX_BODY_LEN - 5]);
    let bytes = p.to_bytes().unwrap();
    assert_eq!(bytes.len(), MAX_PACKET_LEN);
    assert_eq!(decode_one(&bytes), p);
    let over = pkt(PacketType::Rpc)
        .with_url("/echo")
        .with_data(vec![7u8; MAX_BODY_LEN - 4]);
    assert_eq!(
        over.to_bytes(),
        Err(EncodeError::TooLarge {
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN
        })
    );
}

#[test]
fn truncated_input_waits_for_more() {
    let wire = pkt(PacketType::Rpc)
        .with_url("/x")
        .with_data(&b"12345"[..])
        .to_bytes()
        .unwrap();
    let mut dec = Decoder::new();
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(dec.decode(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
}

#[test]
fn truncated_datagram_is_refused() {
    let wire = pkt(PacketType::Datagram)
        .with_url("/x")
        .with_data(&b"12345"[..])
        .to_bytes()
        .unwrap();
    let dec = Decoder::new();
    assert!(matches!(
        dec.decode_datagram(wire.slice(..10)),
        Err(DatagramError::Truncated { .. })
    ));
    assert!(matches!(
        dec.decode_datagram(wire.slice(..26)),
        Err(DatagramError::Truncated { .. })
    ));
    // Missing pad at the end of a datagram is tolerated.
    assert!(dec.decode_datagram(wire.slice(..27)).is_ok());
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    (
        any::<u8>(),
        0u8..0x40,
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(t, flags, status, seqno, tunid, url, param, data)| Packet {
                ptype: PacketType::from_u8(t),
                flags: Flags::from_wire(flags),
                status: Status(status),
                seqno,
                tunid,
                url: url.into(),
                param: param.into(),
                data: data.into(),
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_is_identity(p in arb_packet()) {
        let bytes = p.to_bytes().unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(decode_one(&bytes), p);
    }

    #[test]
    fn any_split_of_a_valid_stream_decodes_the_same(
        packets in proptest::collection::vec(arb_packet(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets { p.encode(&mut wire).unwrap(); }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            buf.extend_from_slice(&wire[w[0]..w[1]]);
            while let Some(p) = dec.decode(&mut buf).unwrap() { got.push(p); }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, packets);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8),
        magic_first in any::<bool>(),
    ) {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, c) in chunks.iter().enumerate() {
            if i == 0 && magic_first { buf.extend_from_slice(&[MAGIC]); }
            buf.extend_from_slice(c);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
        for c in &chunks {
            let _ = dec.decode_datagram(Bytes::from(c.clone()));
        }
    }
}
