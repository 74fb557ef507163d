//! The relay: client datagrams to chosen URLs republished to subscribers, with a rate per
//! client, a hook that refuses or rewrites, and every outcome counted.

use crate::common::*;
use tether::server::{Relay, RelayVerdict};
use tether::{Client, Payload, Server};

fn numbered(i: u64) -> Payload {
    Payload::json(&i).unwrap()
}

/// The numbers `sub` receives on `url` until it has `n` of them.
async fn receive(sub: &mut tether::Subscription, n: usize) -> Vec<(String, u64, bool)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a relayed publish in time")
            .expect("subscription open");
        let v: u64 = serde_json::from_slice(&m.payload.param).unwrap();
        got.push((m.url, v, m.quick));
    }
    got
}

#[tokio::test]
async fn datagrams_to_relayed_urls_reach_every_subscriber_once_in_order_and_others_go_to_the_handler(
) {
    let (server, l) = start(Server::builder().relay(Relay::new(["/r/"]))).await;
    let subscriber = Client::connect(&url(&l)).await.unwrap();
    let mut sub = subscriber.subscribe(["/r/"]).await.unwrap();
    let publisher = Client::connect(&url(&l)).await.unwrap();
    let mut echoes = publisher.datagrams().unwrap();
    const N: u64 = 2_000;
    for i in 0..N {
        publisher.datagram("/r/x", numbered(i)).await.unwrap();
    }
    let want: Vec<_> = (0..N).map(|i| ("/r/x".to_string(), i, false)).collect();
    assert_eq!(receive(&mut sub, N as usize).await, want);
    // Quick datagrams become quick publishes.
    publisher.datagram_quick("/r/q", numbered(7)).await.unwrap();
    assert_eq!(receive(&mut sub, 1).await, [("/r/q".into(), 7, true)]);
    // A URL the relay does not cover goes to the datagram handler (the test's echo), and is
    // not published.
    publisher.datagram("/rx", numbered(1)).await.unwrap();
    let echo = tokio::time::timeout(WAIT, echoes.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo.url, "/rx");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "nothing more was published"
    );
    let stats = server.relay_stats().unwrap();
    assert_eq!((stats.relayed, stats.relayed_quick), (N, 1));
    assert_eq!(stats.throttled + stats.refused_rate + stats.failed, 0);
    assert_eq!(Server::builder().build().relay_stats(), None);
}

#[tokio::test]
async fn over_the_rate_tcp_senders_wait_and_quick_datagrams_are_refused_and_counted() {
    const RATE: u32 = 50;
    let (server, l) =
        start(Server::builder().relay(Relay::new(["/r/"]).rate_per_client(RATE))).await;
    let subscriber = Client::connect(&url(&l)).await.unwrap();
    let mut sub = subscriber.subscribe(["/r/"]).await.unwrap();
    let publisher = Client::connect(&url(&l)).await.unwrap();
    // Twice the burst over TCP: the second half waits for tokens, nothing is lost.
    let n = 2 * RATE as u64;
    for i in 0..n {
        publisher.datagram("/r/t", numbered(i)).await.unwrap();
    }
    let got = receive(&mut sub, n as usize).await;
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let stats = server.relay_stats().unwrap();
    assert_eq!(stats.relayed, n);
    assert!(stats.throttled >= u64::from(RATE) / 2, "{stats:?}");
    // Another client has its own bucket; over UDP, what is over the rate is refused.
    let quick = Client::connect(&url(&l)).await.unwrap();
    let sent = 4 * u64::from(RATE);
    for i in 0..sent {
        quick.datagram_quick("/r/q", numbered(i)).await.unwrap();
    }
    let counted = tokio::time::timeout(WAIT, async {
        loop {
            let s = server.relay_stats().unwrap();
            if s.relayed_quick + s.refused_rate == sent {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every quick datagram relayed or refused");
    assert!(counted.refused_rate >= sent / 2, "{counted:?}");
    let relayed = receive(&mut sub, counted.relayed_quick as usize).await;
    assert!(relayed.iter().all(|(u, _, q)| u == "/r/q" && *q));
}

#[tokio::test]
async fn the_hook_refuses_or_rewrites() {
    let relay = Relay::new(["/r/"]).hook(|dg| match dg.url.as_str() {
        "/r/secret" => RelayVerdict::Refuse,
        "/r/old" => RelayVerdict::Rewrite {
            url: "/r/new".into(),
            payload: numbered(100),
        },
        _ => RelayVerdict::Publish,
    });
    let (server, l) = start(Server::builder().relay(relay)).await;
    let subscriber = Client::connect(&url(&l)).await.unwrap();
    let mut sub = subscriber.subscribe(["/r/"]).await.unwrap();
    let publisher = Client::connect(&url(&l)).await.unwrap();
    for (u, i) in [("/r/secret", 1), ("/r/old", 2), ("/r/plain", 3)] {
        publisher.datagram(u, numbered(i)).await.unwrap();
    }
    assert_eq!(
        receive(&mut sub, 2).await,
        [("/r/new".into(), 100, false), ("/r/plain".into(), 3, false)]
    );
    let stats = server.relay_stats().unwrap();
    assert_eq!((stats.relayed, stats.refused_hook), (2, 1));
}
