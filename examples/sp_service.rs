//! socket_protocol: a server with a secret and a read service, and a client that
//! authenticates by itself (seed/key, the secret never travels), reads a value by its
//! data id, and shows that before trust its requests are answered "authentication
//! required".
//!
//! `cargo run -p tether-examples --example sp_service`

use std::time::Duration;

use serde_json::json;
use tether::sp::{sid, status, AuthState, Endpoint, Message};

const TEMPERATURE: u32 = 1;

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    let server = Endpoint::new()
        .secret("correct horse")
        .channel_name("tower");
    server.add_data(sid::READ_REQUEST, TEMPERATURE, "temperature");
    server.register_callback(sid::READ_REQUEST, TEMPERATURE, |_peer, _m: Message| async {
        Some((status::OKAY, json!(21.5)))
    });
    let listening = server.bind("127.0.0.1:0").await?;

    // A client without the secret: refused with status 3, the callback never runs.
    let stranger = Endpoint::new().connect(listening.local_addr()).await?;
    stranger
        .send(sid::READ_REQUEST, TEMPERATURE, json!(null))
        .await?;
    let refused = stranger
        .receive(sid::READ_RESPONSE, TEMPERATURE, Duration::from_secs(5))
        .await
        .expect("an answer");
    println!("without the secret: status {}", refused.status);
    assert_eq!(refused.status, status::AUTH_REQUIRED);

    // With it, and auto_auth: the send waits until the connection is trusted.
    let client = Endpoint::new()
        .secret("correct horse")
        .auto_auth(true)
        .channel_name("ground")
        .connect(listening.local_addr())
        .await?;
    client
        .send(sid::READ_REQUEST, TEMPERATURE, json!(null))
        .await?;
    let answer = client
        .receive(sid::READ_RESPONSE, TEMPERATURE, Duration::from_secs(5))
        .await
        .expect("an answer");
    println!(
        "with the secret ({}): status {}, temperature {}",
        client.auth_state(),
        answer.status,
        answer.data
    );
    assert_eq!(client.auth_state(), AuthState::Trusted);
    assert_eq!((answer.status, answer.data), (status::OKAY, json!(21.5)));
    // The channel name the two sides agreed on: the client's.
    assert_eq!(client.channel_name().as_deref(), Some("ground"));

    client.close();
    stranger.close();
    listening.shutdown().await;
    println!("sp_service: done");
    Ok(())
}
