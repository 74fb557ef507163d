//! `tether sub`: subscribe, print each message as one JSON line.

use super::{ConnectArgs, Failure};
use crate::output;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// vsoa://HOST:PORT/PATH: the server and the first URL to subscribe to.
    #[arg(value_parser = super::parse_route_url)]
    url: tether::VsoaUrl,
    /// More URLs on the same server.
    paths: Vec<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let mut urls = vec![args.url.path.clone()];
    urls.extend(args.paths.iter().cloned());
    let client = args.conn.connect(&args.url).await?;
    let mut sub = client.subscribe(urls).await?;
    if args.count == Some(0) {
        return Ok(());
    }
    // Tell whoever drives us that the subscription is in place (stderr: stdout is data).
    eprintln!("tether: subscribed");
    let mut seen = 0u64;
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => {
                    if msg.lost_before > 0 {
                        eprintln!("tether: {} messages lost before this one: this reader was too slow", msg.lost_before);
                    }
                    output::print_line(&output::message_json(&msg));
                    seen += 1;
                    if args.count.is_some_and(|n| seen >= n) {
                        return Ok(());
                    }
                }
                None => {
                    // The connection is over, so its reason is there already.
                    let why = tokio::time::timeout(std::time::Duration::from_secs(1), client.closed())
                        .await
                        .map_or_else(|_| "no reason known".to_string(), |r| r.to_string());
                    return Err(Failure {
                        message: format!("connection to {} ended after {seen} messages: {why}", args.url),
                        code: crate::cmd::exit::UNREACHABLE,
                    })
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
