//! A publisher and a subscriber: the subscriber asks for the prefix `/sensors/` and gets
//! every publish under it, in order, and nothing else.
//!
//! `cargo run -p tether-examples --example pubsub`

use std::time::Duration;

use tether::{Client, Payload, Server};

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    let server = Server::builder().build();
    let listening = server.bind("127.0.0.1:0").await?;
    let client = Client::connect(&format!("vsoa://{}", listening.local_addr())).await?;
    let mut sub = client.subscribe(["/sensors/"]).await?;

    for (i, url) in ["/sensors/temp", "/other", "/sensors/rpm", "/sensors"]
        .iter()
        .enumerate()
    {
        let report = server.publish(url, Payload::json(&i)?).await?;
        println!("published #{i} on {url}: delivered to {}", report.delivered);
    }

    // `/other` does not match `/sensors/`; `/sensors` itself does.
    for want in ["/sensors/temp", "/sensors/rpm", "/sensors"] {
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a publish within 10 s")
            .expect("the subscription is open");
        println!(
            "received {} {}",
            msg.url,
            msg.payload.param_value().unwrap_or_default()
        );
        assert_eq!(msg.url, want);
    }

    client.close().await;
    listening.shutdown().await;
    println!("pubsub: done");
    Ok(())
}
