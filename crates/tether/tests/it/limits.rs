//! Every limit of `Config`: what a peer sees when it hits one, and that everyone else is
//! unaffected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use tether::{Client, Reply, Request, Server, Status};
use tether_wire::vsoa::{Packet, PacketType};
use tokio::net::TcpStream;

#[tokio::test]
async fn max_connections_refuses_newcomers_and_frees_up() {
    let (server, l) = start(Server::builder().max_connections(3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(l.local_addr()).await;
        c.login(None).await;
        held.push(c);
    }
    let mut refused = Raw::connect(l.local_addr()).await;
    assert!(
        refused.expect_close().await.is_empty(),
        "closed without a word"
    );
    assert_eq!(server.admission_stats().refused_full, 1);
    held[0].ping_barrier(1).await;
    held.pop(); // one leaves: room for one more, once the server has noticed
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.connection_count().all > 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let mut next = Raw::connect(l.local_addr()).await;
    next.login(None).await;
    next.ping_barrier(2).await;
}

#[tokio::test]
async fn ten_thousand_silent_connections_do_not_lock_out_a_real_client() {
    let (server, l) = start(Server::builder().max_pending_logins(100)).await;
    let mut silent = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        silent.push(TcpStream::connect(l.local_addr()).await.unwrap());
    }
    // A real client after the flood: it is the newest, so it is not the one evicted.
    let c = Client::connect(&url(&l)).await.unwrap();
    c.ping(WAIT).await.unwrap();
    let tether::server::ConnectionCount { all, pending } = server.connection_count();
    assert!(
        pending <= 100 && all <= 101,
        "held {all} connections, {pending} pending"
    );
    assert!(server.admission_stats().evicted_pending >= 9_900);
    drop(silent);
}

#[tokio::test]
async fn a_flooding_client_is_held_to_its_in_flight_limit_and_starves_nobody() {
    let (server, l) = start(Server::builder().max_in_flight_per_client(2)).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    server.route("/slow", move |_req: Request| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            m.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Reply::empty()
        }
    });
    let flooder = Client::connect(&url(&l)).await.unwrap();
    let other = Client::connect(&url(&l)).await.unwrap();
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let c = flooder.clone();
            tokio::spawn(async move { c.call("/slow").timeout(WAIT).await })
        })
        .collect();
    // Another client is served while the flood is queued.
    other.call("/echo").timeout(WAIT).await.unwrap();
    for t in flood {
        assert_eq!(
            t.await.unwrap().unwrap().status,
            Status::SUCCESS,
            "nothing fails, it waits"
        );
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn urls_over_the_limit_get_status_2() {
    let (_s, l) = start(Server::builder().max_url_len(16)).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    c.send(&rpc("/echo/0123456789ab", 1)).await; // 18 bytes
    assert_eq!(c.expect().await.status, Status::ARGUMENTS);
    c.send(&rpc("/echo/0123456789", 2)).await; // 16 bytes: routed (no such route: 3)
    assert_eq!(c.expect().await.status, Status::INVALID_URL);
    c.send(
        &Packet::new(PacketType::Subscribe)
            .with_url("/topic/0123456789")
            .with_seqno(3),
    )
    .await;
    assert_eq!(c.expect().await.status, Status::ARGUMENTS);
    let list = Bytes::from_static(br#"["/ok","/topic/0123456789"]"#);
    c.send(
        &Packet::new(PacketType::Subscribe)
            .with_param(list)
            .with_seqno(4),
    )
    .await;
    assert_eq!(c.expect().await.status, Status::ARGUMENTS);
}

#[tokio::test]
async fn idle_connections_are_closed_and_active_ones_kept() {
    let (_s, l) = start(Server::builder().idle_timeout(Duration::from_millis(150))).await;
    let mut idle = Raw::connect(l.local_addr()).await;
    idle.login(None).await;
    let mut active = Raw::connect(l.local_addr()).await;
    active.login(None).await;
    let closer = tokio::spawn(async move { idle.expect_close().await });
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        active.ping_barrier(i).await;
    }
    assert!(closer.await.unwrap().is_empty(), "the idle one was closed");
}

#[tokio::test]
async fn connection_rate_per_ip_refuses_bursts() {
    let (server, l) = start(Server::builder().connection_rate_per_ip(5)).await;
    let mut ok = Vec::new();
    for _ in 0..5 {
        let mut c = Raw::connect(l.local_addr()).await;
        c.login(None).await;
        ok.push(c);
    }
    let mut sixth = Raw::connect(l.local_addr()).await;
    assert!(sixth.expect_close().await.is_empty());
    assert_eq!(server.admission_stats().refused_rate, 1);
    ok[0].ping_barrier(1).await;
}

#[tokio::test]
async fn a_million_subscriptions_stop_at_the_limit() {
    let (server, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let mut accepted = 0;
    // 1 005 000 URLs in lists of 15 000 (each list fits in one 256 KiB packet).
    for batch in 0..67u32 {
        let urls: Vec<String> = (0..15_000).map(|i| format!("/m/{batch}/{i}")).collect();
        let p = Packet::new(PacketType::Subscribe)
            .with_seqno(batch)
            .with_param(serde_json::to_vec(&urls).unwrap());
        c.send(&p).await;
        match c.expect().await.status {
            Status::SUCCESS => accepted += 15_000,
            Status::NO_MEMORY => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(accepted, 60_000, "four lists fit under the default 65 536");
    assert_eq!(server.clients()[0].subscriptions.len(), 60_000);
}
