//! `tether call`: one RPC, one JSON line.

use super::{ConnectArgs, Failure, PayloadArgs};
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// vsoa://HOST:PORT/PATH
    url: tether::VsoaUrl,
    /// Use method SET (default GET).
    #[arg(long)]
    set: bool,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let payload = args.payload.payload()?;
    let client = args.conn.connect(&args.url).await?;
    let mut call = client
        .call(&args.url.path)
        .payload(payload)
        .timeout(args.conn.timeout);
    if args.set {
        call = call.set();
    }
    let reply = call.await?;
    output::print_line(&output::reply_json(&reply));
    client.close().await;
    Ok(())
}
