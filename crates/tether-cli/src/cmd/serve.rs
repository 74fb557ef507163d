//! `tether serve`: a server with the demo services, until Ctrl-C.

use super::Failure;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3005")]
    listen: String,
    /// Require this password from clients.
    #[arg(
        long,
        value_name = "PW",
        env = "TETHER_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Server name in the handshake info.
    #[arg(long, default_value = "tether")]
    name: String,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut builder = tether::Server::builder().info(serde_json::json!({ "name": args.name }));
    if let Some(pw) = &args.password {
        builder = builder.password(pw);
    }
    let builder = crate::demo::datagram_echo(builder);
    let server = builder.build();
    crate::demo::install(&server);
    let listening = server.bind(args.listen.as_str()).await?;
    // The first stdout line is the contract for scripts that start us on port 0.
    crate::output::print_line(&format!(
        "tether: VSOA server on vsoa://{}",
        listening.local_addr()
    ));
    if let Err(e) = tokio::signal::ctrl_c().await {
        return Err(Failure {
            message: format!("cannot wait for Ctrl-C: {e}"),
            code: 1,
        });
    }
    tracing::info!("shutting down");
    listening.shutdown().await;
    Ok(())
}
