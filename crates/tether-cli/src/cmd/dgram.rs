//! `tether dgram`: send one datagram; optionally wait for one back and print it.

use std::time::Duration;

use super::{parse_secs, ConnectArgs, Failure, PayloadArgs};
use crate::output;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// vsoa://HOST:PORT/PATH
    #[arg(value_parser = super::parse_route_url)]
    url: tether::VsoaUrl,
    /// Send over the quick (UDP) channel instead of TCP.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    payload: PayloadArgs,
    /// Wait this many seconds for one datagram from the server and print it as a JSON line
    /// (exit 5 if none comes).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    wait: Option<Duration>,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let payload = args.payload.payload()?;
    let client = args.conn.connect(&args.url).await?;
    let mut incoming = client.datagrams();
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
                    code: crate::cmd::exit::TIMEOUT,
                })
            }
        }
    }
    client.close().await;
    Ok(())
}
