//! A stream transfer: a route opens a raw byte stream beside the VSOA connection and sends
//! a megabyte through it; the client connects to the stream the reply announced and checks
//! every byte.
//!
//! `cargo run -p tether-examples --example stream_transfer`

use tether::{Client, Reply, Request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 1 << 20;

fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    let server = Server::builder().build();
    server.route("/download", |req: Request| async move {
        req.with_stream(Reply::empty(), |mut stream| async move {
            let data: Vec<u8> = (0..SIZE).map(byte).collect();
            // TCP backpressure all the way: write_all waits for a slow reader.
            if stream.write_all(&data).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        })
        .await
    });
    let listening = server.bind("127.0.0.1:0").await?;
    let client = Client::connect(&format!("vsoa://{}", listening.local_addr())).await?;

    let reply = client.call("/download").await?;
    println!("/download opened stream port {}", reply.tunid);
    let mut stream = client.connect_stream(reply.tunid).await?;
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .await
        .map_err(|e| tether::Error::Closed {
            reason: tether::CloseReason::ReadFailed(e.to_string().into()),
        })?;
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().enumerate().all(|(i, b)| *b == byte(i)));
    println!("received {} bytes, all correct", got.len());

    client.close().await;
    listening.shutdown().await;
    println!("stream_transfer: done");
    Ok(())
}
