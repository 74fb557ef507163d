//! `tether call`: one RPC, one JSON line.

use super::{ConnectArgs, Failure, PayloadArgs};
use crate::output;

/// The options of a command that makes one RPC (`call`, and `stream` before it connects).
#[derive(clap::Args)]
pub(crate) struct RpcArgs {
    /// vsoa://HOST:PORT/PATH
    #[arg(value_parser = super::parse_route_url)]
    pub url: tether::VsoaUrl,
    /// Use method SET (default GET).
    #[arg(long)]
    set: bool,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    conn: ConnectArgs,
}

impl RpcArgs {
    /// Connects and makes the call; returns the client (still open) and the reply.
    pub(crate) async fn send(&self) -> Result<(tether::Client, tether::Response), Failure> {
        let payload = self.payload.payload()?;
        let client = self.conn.connect(&self.url).await?;
        let mut call = client
            .call(&self.url.path)
            .payload(payload)
            .timeout(self.conn.timeout);
        if self.set {
            call = call.set();
        }
        let reply = call.await?;
        Ok((client, reply))
    }
}

pub(crate) async fn run(args: RpcArgs) -> Result<(), Failure> {
    let (client, reply) = args.send().await?;
    output::print_line(&output::reply_json(&reply));
    client.close().await;
    Ok(())
}
