//! `tether position` (a position service) and `tether lookup` (ask one).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{parse_pos, parse_secs, Failure};
use crate::output;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// UDP address to answer on (VSOA's position port is 54).
    #[arg(long, value_name = "HOST:PORT", default_value = format!("127.0.0.1:{}", tether::position::DEFAULT_PORT))]
    listen: SocketAddr,
    /// Names to answer: one `NAME ADDR PORT [tls]` per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
}

pub(crate) async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let server = match &args.hosts {
        Some(path) => {
            tether::position::PositionServer::from_hosts_file(path).map_err(Failure::usage)?
        }
        None => tether::position::PositionServer::default(),
    };
    let listening = server.bind(args.listen).await?;
    output::print_line(&format!(
        "tether: position service on {}",
        listening.local_addr()
    ));
    tokio::signal::ctrl_c().await.map_err(|e| Failure {
        message: format!("cannot wait for Ctrl-C: {e}"),
        code: crate::cmd::exit::OTHER,
    })?;
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct LookupArgs {
    /// The server name to resolve.
    name: String,
    /// Position server to ask (default: VSOA_POS_SERVER, then /etc/vsoa.pos). May be repeated.
    #[arg(long = "pos", value_name = "ADDR", value_parser = parse_pos)]
    position_servers: Vec<SocketAddr>,
    /// Seconds to wait for each position server.
    #[arg(long, value_name = "SECS", default_value = super::secs(tether::position::DEFAULT_TIMEOUT), value_parser = parse_secs)]
    timeout: std::time::Duration,
}

pub(crate) async fn lookup(args: LookupArgs) -> Result<(), Failure> {
    let servers = if args.position_servers.is_empty() {
        tether::position::configured_servers()
    } else {
        args.position_servers.clone()
    };
    let entry = tether::position::lookup_with(&args.name, &servers, args.timeout).await?;
    output::print_line(
        &serde_json::json!({
            "name": args.name,
            "addr": entry.addr.to_string(),
            "port": entry.port,
            "security": entry.security,
        })
        .to_string(),
    );
    Ok(())
}
