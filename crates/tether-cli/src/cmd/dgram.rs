//! `tether dgram`: send one datagram; optionally wait for one back and print it.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use super::{parse_secs, ConnectArgs, Failure};
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// vsoa://HOST:PORT/PATH
    url: tether::VsoaUrl,
    /// Send over the quick (UDP) channel instead of TCP.
    #[arg(long)]
    quick: bool,
    /// Param: JSON text, sent as given.
    #[arg(long, value_name = "JSON")]
    param: Option<String>,
    /// Data, base64-encoded.
    #[arg(long, value_name = "B64")]
    data_base64: Option<String>,
    /// Wait this many seconds for one datagram from the server and print it as a JSON line
    /// (exit 5 if none comes).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    wait: Option<Duration>,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let param = match &args.param {
        Some(text) => {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| Failure::usage(format!("--param is not valid JSON: {e}")))?;
            Bytes::from(text.clone().into_bytes())
        }
        None => Bytes::new(),
    };
    let data = match &args.data_base64 {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| Failure::usage(format!("--data-base64 is not valid base64: {e}")))?,
        None => Vec::new(),
    };
    let client = args.conn.connect(&args.url).await?;
    let mut incoming = client.datagrams();
    let payload = tether::Payload {
        param,
        data: data.into(),
    };
    if args.quick {
        client.datagram_quick(&args.url.path, payload).await?;
    } else {
        client.datagram(&args.url.path, payload).await?;
    }
    if let (Some(wait), Some(incoming)) = (args.wait, incoming.as_mut()) {
        match tokio::time::timeout(wait, incoming.next()).await {
            Ok(Some(msg)) => output::print_line(&output::message_json(&msg)),
            _ => {
                return Err(Failure {
                    message: format!("no datagram from {} within {wait:?}", args.url),
                    code: 5,
                })
            }
        }
    }
    client.close().await;
    Ok(())
}
