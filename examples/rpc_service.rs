//! An RPC service with an exact route, a prefix route and a default route, and a client
//! calling each (VSOA's lookup order: exact, then the longest prefix, then `/`).
//!
//! `cargo run -p tether-examples --example rpc_service`

use serde_json::json;
use tether::{Client, Mode, Reply, Request, Server, Status};

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    let server = Server::builder().info(json!({"name": "rpc-demo"})).build();
    // Exact: only `/echo`.
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    // Prefix: `/sensors`, `/sensors/`, `/sensors/...` (not `/sensorsX`), handled in order.
    server.route_with("/sensors/", Mode::Inline, |req: Request| async move {
        let name = req
            .url()
            .trim_start_matches("/sensors")
            .trim_start_matches('/');
        Reply::json(&json!({"sensor": name, "value": 21.5}))
            .unwrap_or_else(|e| Reply::error(Status::ARGUMENTS, e.to_string()))
    });
    // Default: every other URL.
    server.route("/", |req: Request| async move {
        Reply::error(Status::INVALID_URL, format!("nothing at {}", req.url()))
    });
    let listening = server.bind("127.0.0.1:0").await?;
    let url = format!("vsoa://{}", listening.local_addr());

    let client = Client::connect(&url).await?;
    println!("server info: {}", client.server_info());
    let echo = client
        .call("/echo")
        .json(&json!({"hello": "tether"}))?
        .await?;
    println!(
        "/echo -> {}",
        echo.payload.param_value().unwrap_or_default()
    );
    let temp = client.call("/sensors/temp").await?;
    println!(
        "/sensors/temp -> {}",
        temp.payload.param_value().unwrap_or_default()
    );
    let missing = client.call("/nowhere").await?;
    println!("/nowhere -> status {}", missing.status);
    assert_eq!(missing.status, Status::INVALID_URL);

    client.close().await;
    listening.shutdown().await;
    println!("rpc_service: done");
    Ok(())
}
