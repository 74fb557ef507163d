//! `tether discover`: wait for a clever-show server's `server_ip` announcement.

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// UDP address to listen on (the original listens on 0.0.0.0:8181; give that to hear a
    /// whole network).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8181")]
    listen: std::net::SocketAddr,
    /// Seconds to wait.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = super::parse_secs)]
    timeout: std::time::Duration,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let found = tether::clevershow::discovery::discover(args.listen, args.timeout).await?;
    crate::output::print_line(
        &serde_json::json!({
            "host": found.host,
            "port": found.port,
            "id": found.id,
            "start_time": found.start_time,
        })
        .to_string(),
    );
    Ok(())
}
