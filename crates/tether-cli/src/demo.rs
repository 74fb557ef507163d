//! The demo services `tether serve` runs (the CLI contract in README):
//! * `/echo` (any method): replies with the request's param and data unchanged;
//! * `/publish` (SET): publishes `{"url", "param"?, "data"? (base64), "quick"?}`;
//! * every datagram is sent back to its sender on the same URL, channel and payload.

use base64::Engine;
use bytes::Bytes;
use tether::{Datagram, Method, Mode, Payload, Reply, Request, Server, ServerBuilder, Status};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    url: String,
    #[serde(default)]
    param: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    quick: bool,
}

pub fn install(server: &Server) {
    server.route_with("/echo", Mode::Inline, |req: Request| async move {
        Reply::ok(req.payload)
    });
    // Inline: pipelined /publish calls of one client publish in the order they were sent.
    let publisher = server.clone();
    server.route_with("/publish", Mode::Inline, move |req: Request| {
        let server = publisher.clone();
        async move { publish(&server, req).await }
    });
}

async fn publish(server: &Server, req: Request) -> Reply {
    if req.method != Method::Set {
        return Reply::error(Status::ARGUMENTS, "/publish takes method SET");
    }
    let args: PublishArgs = match req.payload.param_json() {
        Ok(a) => a,
        Err(e) => {
            return Reply::error(
                Status::ARGUMENTS,
                format!("param must be {{\"url\": \"/x\", \"param\": any, \"data\": base64, \"quick\": false}}: {e}"),
            )
        }
    };
    if args.quick {
        return Reply::error(
            Status::ARGUMENTS,
            "quick publishing needs the quick UDP channel, which this server does not have yet",
        );
    }
    let param = match &args.param {
        Some(v) => match serde_json::to_vec(v) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Reply::error(Status::ARGUMENTS, e.to_string()),
        },
        None => Bytes::new(),
    };
    let data = match &args.data {
        Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(d) => Bytes::from(d),
            Err(e) => return Reply::error(Status::ARGUMENTS, format!("data is not base64: {e}")),
        },
        None => Bytes::new(),
    };
    match server.publish(&args.url, Payload { param, data }).await {
        Ok(report) => Reply::json(&serde_json::json!({
            "delivered": report.delivered,
            "cut_off": report.cut_off,
        }))
        .unwrap_or_default(),
        Err(e) => Reply::error(Status::ARGUMENTS, e.to_string()),
    }
}

pub fn datagram_echo(builder: ServerBuilder) -> ServerBuilder {
    builder.on_datagram(|dg: Datagram| async move {
        if let Err(e) = dg.client.datagram(&dg.url, dg.payload).await {
            tracing::debug!("datagram echo to client {} failed: {e}", dg.client.id());
        }
    })
}
