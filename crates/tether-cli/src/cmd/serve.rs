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
    /// Accept challenge logins with this shared secret (beside --password, if given).
    #[arg(long, value_name = "S", env = "TETHER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Refuse plain password logins: only challenge logins get in.
    #[arg(long, requires = "secret")]
    require_secret: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key. Turns the quick channel off.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates issued by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Server name in the handshake info (and for --register).
    #[arg(long, default_value = "tether")]
    name: String,
    /// Register NAME -> this server with the position service at this address, and keep
    /// the registration alive (a Tether extension; see docs/position.md).
    #[arg(long, value_name = "POS_ADDR", value_parser = super::parse_pos)]
    register: Option<std::net::SocketAddr>,
    /// Seconds a registration lives unless renewed (renewed every third of it).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = super::parse_secs)]
    register_ttl: std::time::Duration,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut builder = tether::Server::builder().info(serde_json::json!({ "name": args.name }));
    if let Some(pw) = &args.password {
        builder = builder.password(pw);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = tether::tls::ServerTls::from_pem_files(cert, key, args.tls_client_ca.as_deref())?;
        builder = builder.tls(tls);
    }
    if let Some(secret) = &args.secret {
        builder = builder.secret(secret).require_secret(args.require_secret);
    }
    let builder = crate::demo::datagram_echo(builder);
    let server = builder.build();
    crate::demo::install(&server);
    let listening = server.bind(args.listen.as_str()).await?;
    let _registration = match args.register {
        Some(pos) => Some(
            tether::position::Registration::start(
                pos,
                &args.name,
                listening.local_addr().port(),
                args.tls_cert.is_some(),
                args.register_ttl,
            )
            .await?,
        ),
        None => None,
    };
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
