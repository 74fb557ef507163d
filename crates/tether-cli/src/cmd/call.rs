//! `tether call`: one RPC, one JSON line.

use base64::Engine;
use bytes::Bytes;

use super::{ConnectArgs, Failure};
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// vsoa://HOST:PORT/PATH
    url: tether::VsoaUrl,
    /// Use method SET (default GET).
    #[arg(long)]
    set: bool,
    /// Param: JSON text, sent as given.
    #[arg(long, value_name = "JSON")]
    param: Option<String>,
    /// Data, base64-encoded.
    #[arg(long, value_name = "B64")]
    data_base64: Option<String>,
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
    let mut call = client
        .call(&args.url.path)
        .param(param)
        .data(data)
        .timeout(args.conn.timeout);
    if args.set {
        call = call.set();
    }
    let reply = call.await?;
    output::print_line(&output::reply_json(&reply));
    client.close().await;
    Ok(())
}
