//! The codecs on the hot path: VSOA packet encode and decode (RPC-sized and publish-sized),
//! clever-show frames, and the four JSON steps of one juggler request (the work a gateway
//! request costs beyond its WebSocket frames). `cargo bench -p tether-wire --bench codec`.
#![allow(missing_docs)] // criterion_group! defines the undocumented `pub fn benches`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{Map, Value};
use tether_wire::clevershow::{self, Frame};
use tether_wire::vsoa::{Decoder, Packet, PacketType};

fn rpc(param: usize) -> Packet {
    Packet::new(PacketType::Rpc)
        .with_url("/bench/echo")
        .with_seqno(42)
        .with_param(Bytes::from(vec![b'x'; param]))
}

fn vsoa(c: &mut Criterion) {
    let mut g = c.benchmark_group("vsoa");
    for size in [32usize, 64, 1024, 16 * 1024] {
        let p = rpc(size);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("encode/{size}B"), |b| {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                black_box(&p).encode(&mut buf).unwrap();
                black_box(buf.len())
            })
        });
        // 1 000 packets back to back, decoded in one go (as a read buffer is).
        let mut wire = BytesMut::new();
        for _ in 0..1000 {
            p.encode(&mut wire).unwrap();
        }
        let wire = wire.freeze();
        g.throughput(Throughput::Elements(1000));
        g.bench_function(format!("decode/{size}B x1000"), |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let mut dec = Decoder::new();
                    let mut n = 0;
                    while let Some(p) = dec.decode(&mut buf).unwrap() {
                        black_box(&p);
                        n += 1;
                    }
                    assert_eq!(n, 1000);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn clever_show(c: &mut Criterion) {
    let mut g = c.benchmark_group("clevershow");
    let mut kwargs = Map::new();
    kwargs.insert("time".into(), Value::from("1700000000.5"));
    let frame = Frame::action("start", vec![], kwargs);
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode/action", |b| {
        b.iter(|| black_box(black_box(&frame).to_bytes().unwrap()))
    });
    let wire = frame.to_bytes().unwrap();
    g.bench_function("decode/action", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(clevershow::Decoder::default().decode(&mut buf).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// One `ws-rpc` request's JSON work, as `tether bench ws-rpc` sends it (64-character data):
/// the client writes the request, the gateway reads it and writes the response, the client
/// reads that.
fn juggler(c: &mut Criterion) {
    use tether_wire::juggler::{Message, Parsed};
    let mut g = c.benchmark_group("juggler");
    let data = Value::from("x".repeat(64));
    let request = Message::Request {
        id: Value::from(123_456),
        name: None,
        data: Some(data.clone()),
    };
    let response = Message::Response {
        id: Value::from(123_456),
        data,
        success: true,
    };
    g.throughput(Throughput::Elements(1));
    for (what, msg) in [("request", &request), ("response", &response)] {
        g.bench_function(format!("write/{what}"), |b| {
            b.iter(|| black_box(black_box(msg).to_json()))
        });
        let text = msg.to_json();
        g.bench_function(format!("read/{what}"), |b| {
            b.iter(|| black_box(serde_json::from_str::<Parsed>(black_box(&text)).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, vsoa, clever_show, juggler);
criterion_main!(benches);
