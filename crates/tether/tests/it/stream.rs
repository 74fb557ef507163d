//! Streams: raw byte tunnels opened by RPC handlers.

use std::time::Duration;

use crate::common::*;
use tether::{Client, Error, Reply, Request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn echo_route(server: &Server) {
    server.route("/stream/echo", |req: Request| async move {
        req.with_stream(Reply::empty(), |stream| async move {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        })
        .await
    });
}

#[tokio::test]
async fn echo_stream_round_trip_and_close_seen_by_both_sides() {
    let (server, l) = start(Server::builder()).await;
    echo_route(&server);
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/stream/echo").await.unwrap();
    assert_ne!(r.tunid, 0, "the reply announces a stream port");
    let stream = c.connect_stream(r.tunid).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 256) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap(); // we are done: the server sees EOF
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, rd.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    // read_to_end returned: the server closed its side after our EOF.
}

#[tokio::test]
async fn only_the_requesting_clients_ip_may_connect() {
    let (server, l) = start(Server::builder()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.route("/stream/hello", move |req: Request| {
        let tx = tx.clone();
        async move {
            let pending = req.open_stream().await.unwrap();
            let tunid = pending.tunid();
            tokio::spawn(async move {
                let mut s = pending.accept().await.unwrap();
                let _ = tx.send(s.peer_addr().unwrap());
                s.write_all(b"HELLO-FROM-SERVER").await.unwrap();
            });
            Reply::empty().with_tunid(tunid)
        }
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/stream/hello").await.unwrap();
    // Another loopback IP: accepted by the kernel, then closed by the server.
    let intruder = tokio::net::TcpSocket::new_v4().unwrap();
    intruder.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut intruder = intruder
        .connect(format!("127.0.0.1:{}", r.tunid).parse().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 32];
    let n = tokio::time::timeout(WAIT, intruder.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the intruder got no data");
    // The rightful client still gets the stream.
    let mut s = c.connect_stream(r.tunid).await.unwrap();
    let mut hello = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut hello))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hello, b"HELLO-FROM-SERVER");
    assert_eq!(rx.recv().await.unwrap().ip().to_string(), "127.0.0.1");
}

#[tokio::test]
async fn a_stream_nobody_connects_to_times_out_and_closes() {
    let (server, l) = start(Server::builder()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.route("/stream/lonely", move |req: Request| {
        let tx = tx.clone();
        async move {
            let pending = req
                .open_stream_with_timeout(Duration::from_millis(100))
                .await
                .unwrap();
            let tunid = pending.tunid();
            tokio::spawn(async move {
                let _ = tx.send(pending.accept().await.map(|_| ()));
            });
            Reply::empty().with_tunid(tunid)
        }
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/stream/lonely").await.unwrap();
    let outcome = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Err(Error::StreamTimeout { port, .. }) if port == r.tunid));
    let late = c.connect_stream(r.tunid).await;
    assert!(
        matches!(late, Err(Error::Unreachable { .. })),
        "the listener is closed: {late:?}"
    );
}

#[tokio::test]
async fn a_reader_that_stops_gives_the_writer_backpressure() {
    let (server, l) = start(Server::builder()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.route("/stream/firehose", move |req: Request| {
        let tx = tx.clone();
        async move {
            req.with_stream(Reply::empty(), move |mut s| async move {
                let chunk = vec![0u8; 64 * 1024];
                let mut written = 0u64;
                // Write until one write is held up: that is the backpressure.
                while let Ok(Ok(())) =
                    tokio::time::timeout(Duration::from_millis(300), s.write_all(&chunk)).await
                {
                    written += chunk.len() as u64;
                    if written > 1 << 30 {
                        break;
                    }
                }
                let _ = tx.send(written);
            })
            .await
        }
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/stream/firehose").await.unwrap();
    let _never_read = c.connect_stream(r.tunid).await.unwrap();
    let written = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        written < 64 << 20,
        "{written} bytes went into an unread stream: buffering is unbounded"
    );
}

/// VSOA's `stream.sendtimeout`: with a send timeout, a write into a stream nobody reads
/// fails with `TimedOut` once the socket takes nothing for that long; `stream.keepalive`:
/// on by default, off when asked (the kernel's keepalive timer shows it).
#[tokio::test]
async fn a_stream_can_time_out_its_writes_and_turn_keepalive_off() {
    let (server, l) = start(Server::builder()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.route("/stream/firehose", move |req: Request| {
        let tx = tx.clone();
        async move {
            req.with_stream(Reply::empty(), move |mut s| async move {
                s.set_send_timeout(Some(Duration::from_millis(200)));
                let chunk = vec![0u8; 64 * 1024];
                let mut written = 0u64;
                let outcome = loop {
                    match s.write_all(&chunk).await {
                        Ok(()) => written += chunk.len() as u64,
                        Err(e) => break e.kind(),
                    }
                    if written > 1 << 30 {
                        break std::io::ErrorKind::Other;
                    }
                };
                let _ = tx.send(outcome);
            })
            .await
        }
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/stream/firehose").await.unwrap();
    let never_read = c.connect_stream(r.tunid).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, std::io::ErrorKind::TimedOut);

    // Keepalive on the client's end of a stream, and off again.
    let here = never_read.local_addr().unwrap();
    let timer = |local: std::net::SocketAddr| {
        let port = format!(":{:04X}", local.port());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[1].ends_with(&port))
            .map(|f| f[5].split(':').next().unwrap().parse::<u8>().unwrap())
    };
    let mut seen = None;
    for _ in 0..100 {
        seen = timer(here);
        if seen == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, Some(2), "keepalive timer by default");
    never_read.set_keepalive(None).unwrap();
    assert_eq!(timer(here), Some(0), "no timer once keepalive is off");
}
