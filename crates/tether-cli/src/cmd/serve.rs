//! `tether serve`: a server with the demo services, until Ctrl-C.

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct Args {
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
    /// Serve TLS with this certificate chain (PEM); needs --tls-key. Turns the quick channel
    /// off; the gateway serves HTTPS and wss:// with the same certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates issued by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Also serve clever-show messaging (drone shows) on this TCP address, off by default.
    /// Requests `echo`, `time` and file transfer inside --files-root (docs: README).
    #[arg(long, value_name = "HOST:PORT")]
    clever_show: Option<std::net::SocketAddr>,
    /// The folder file transfers are confined to (VSOA `/files/` and clever-show
    /// `filetransfer`); created if missing.
    #[arg(long, value_name = "DIR", default_value = "files")]
    files_root: std::path::PathBuf,
    /// Largest file `/files/` accepts or sends, in bytes (clever-show moves at most 64 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = tether::transfer::DEFAULT_MAX_FILE)]
    max_file_size: u64,
    #[command(flatten)]
    announce: AnnounceArgs,
    /// Where the WebSocket gateway (hat-juggler protocol, `/ws`) listens.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "TETHER_GATEWAY",
        default_value = "127.0.0.1:8080",
        conflicts_with = "no_gateway"
    )]
    gateway: String,
    /// Do not start the WebSocket gateway.
    #[arg(long)]
    no_gateway: bool,
    #[command(flatten)]
    limits: Limits,
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

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let mut builder = tether::Server::builder().info(serde_json::json!({ "name": args.name }));
    if let Some(pw) = &args.password {
        builder = builder.password(pw);
    }
    let mut tls = None;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let server_tls =
            tether::tls::ServerTls::from_pem_files(cert, key, args.tls_client_ca.as_deref())?;
        builder = builder.tls(server_tls.clone());
        tls = Some(server_tls);
    }
    if let Some(secret) = &args.secret {
        builder = builder.secret(secret).require_secret(args.require_secret);
    }
    let builder = crate::demo::datagram_echo(args.limits.apply(builder));
    let server = builder.build();
    crate::demo::install(&server);
    let files = tether::files::FileRoot::new(&args.files_root).map_err(|e| Failure {
        message: format!("files root {}: {e}", args.files_root.display()),
        code: 1,
    })?;
    tether::transfer::FileService::new(files.clone())
        .max_size(args.max_file_size)
        .install(&server, "/files/");
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
    let clever_show = match args.clever_show {
        Some(addr) => {
            let node = tether::clevershow::Node::new();
            crate::demo::install_clever_show(&node)
                .files(files.clone())
                .routes(&server);
            Some(node.bind(addr).await?)
        }
        None => None,
    };
    let announcer = match (&clever_show, args.announce.announce) {
        (Some(cs), Some(dest)) => Some(args.announce.start(dest, cs.local_addr()).await?),
        (None, Some(_)) => return Err(Failure::usage("--announce needs --clever-show")),
        _ => None,
    };
    let gateway = if args.no_gateway {
        None
    } else {
        let state = tether_gateway::State::default();
        let ws: crate::dashboard::WsClients = Default::default();
        let seen = ws.clone();
        let mut gw = tether_gateway::Gateway::builder(server.clone());
        if let Some(tls) = &tls {
            gw = gw.tls(tls.clone());
        }
        let gw = gw
            .shared_state(state.clone())
            .page(
                "/index.html",
                "text/html; charset=utf-8",
                crate::dashboard::PAGE,
            )
            .on_connection(move |c| seen.lock().unwrap_or_else(|e| e.into_inner()).push(c))
            .build();
        let bound = gw.bind(&args.gateway).await.map_err(|e| Failure {
            message: format!("{e} (the WebSocket gateway; move it with --gateway HOST:PORT or turn it off with --no-gateway)"),
            code: 1,
        })?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let info = crate::dashboard::Info {
            name: args.name.clone(),
            vsoa: format!("vsoa://{}", listening.local_addr()),
            gateway: format!("{scheme}://{}/ws", bound.local_addr()),
            clever_show: clever_show.as_ref().map(|c| c.local_addr().to_string()),
        };
        crate::dashboard::start(server.clone(), state, info, ws);
        Some(bound)
    };
    // The first stdout line is the contract for scripts that start us on port 0.
    crate::output::print_line(&format!(
        "tether: VSOA server on vsoa://{}",
        listening.local_addr()
    ));
    if let Some(gw) = &gateway {
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        crate::output::print_line(&format!(
            "tether: gateway on {scheme}://{}/ws",
            gw.local_addr()
        ));
    }
    if let Some(cs) = &clever_show {
        crate::output::print_line(&format!("tether: clever-show on {}", cs.local_addr()));
    }
    let yielded = async {
        match &announcer {
            Some(a) => a.yielded().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = tokio::signal::ctrl_c() => if let Err(e) = done {
            return Err(Failure {
                message: format!("cannot wait for Ctrl-C: {e}"),
                code: 1,
            });
        },
        older = yielded => {
            // The original's "younger server yields": stop serving clever-show, keep VSOA.
            if let Some(cs) = clever_show {
                cs.shutdown().await;
            }
            crate::output::print_line(&format!(
                "tether: clever-show stopped: server {} at {}:{} started earlier",
                older.id, older.host, older.port
            ));
            if let Err(e) = tokio::signal::ctrl_c().await {
                return Err(Failure {
                    message: format!("cannot wait for Ctrl-C: {e}"),
                    code: 1,
                });
            }
        }
    }
    tracing::info!("shutting down");
    listening.shutdown().await;
    Ok(())
}

/// clever-show discovery announcements: off unless --announce is given.
#[derive(clap::Args)]
struct AnnounceArgs {
    /// Announce the clever-show server with `server_ip` datagrams to this UDP address
    /// (the original sends to 255.255.255.255:8181; a broadcast address also needs
    /// --announce-broadcast).
    #[arg(long, value_name = "HOST:PORT", requires = "clever_show")]
    announce: Option<std::net::SocketAddr>,
    /// Seconds between announcements.
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = super::parse_secs)]
    announce_every: std::time::Duration,
    /// The host announced (default: the clever-show listener's IP address).
    #[arg(long, value_name = "HOST")]
    announce_host: Option<String>,
    /// Allow a broadcast destination for --announce.
    #[arg(long)]
    announce_broadcast: bool,
    /// Listen on this UDP address for other servers' announcements and stop serving
    /// clever-show when one started earlier ("younger server yields").
    #[arg(long, value_name = "HOST:PORT", requires = "announce")]
    yield_to_older: Option<std::net::SocketAddr>,
}

impl AnnounceArgs {
    async fn start(
        &self,
        dest: std::net::SocketAddr,
        show: std::net::SocketAddr,
    ) -> Result<tether::clevershow::discovery::Announcer, Failure> {
        let host = self
            .announce_host
            .clone()
            .unwrap_or_else(|| show.ip().to_string());
        let mut a = tether::clevershow::discovery::Announce::new(dest, host, show.port())
            .every(self.announce_every)
            .allow_broadcast(self.announce_broadcast);
        if let Some(listen) = self.yield_to_older {
            a = a.yield_to_older(listen);
        }
        let announcer = a.start().await?;
        tracing::info!(
            "announcing clever-show server {} to {dest} every {:?}",
            announcer.announcement().id,
            self.announce_every
        );
        Ok(announcer)
    }
}

/// The server limits (docs/security.md); each flag's default is the library's.
#[derive(clap::Args)]
struct Limits {
    /// Connections held at once (default 10000).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections waiting to log in; a newcomer evicts the oldest (default 1024).
    #[arg(long, value_name = "N")]
    max_pending_logins: Option<usize>,
    /// RPCs of one client running at once (default 1024).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Subscriptions per client (default 65536).
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Longest URL in bytes (default 4096).
    #[arg(long, value_name = "N")]
    max_url_len: Option<usize>,
    /// New connections per second per IP address (default: no limit).
    #[arg(long, value_name = "N")]
    connection_rate: Option<u32>,
    /// Seconds a connection has to log in (default 5).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    handshake_timeout: Option<std::time::Duration>,
    /// Seconds without a packet before a connection is closed (default: never).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    idle_timeout: Option<std::time::Duration>,
    /// Seconds a client may leave its queue full before it is cut off (default 0.5).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    send_timeout: Option<std::time::Duration>,
}

impl Limits {
    fn apply(&self, mut b: tether::ServerBuilder) -> tether::ServerBuilder {
        if let Some(n) = self.max_connections {
            b = b.max_connections(n);
        }
        if let Some(n) = self.max_pending_logins {
            b = b.max_pending_logins(n);
        }
        if let Some(n) = self.max_in_flight {
            b = b.max_in_flight_per_client(n);
        }
        if let Some(n) = self.max_subscriptions {
            b = b.max_subscriptions_per_client(n);
        }
        if let Some(n) = self.max_url_len {
            b = b.max_url_len(n);
        }
        if let Some(n) = self.connection_rate {
            b = b.connection_rate_per_ip(n);
        }
        if let Some(t) = self.handshake_timeout {
            b = b.handshake_timeout(t);
        }
        if let Some(t) = self.idle_timeout {
            b = b.idle_timeout(t);
        }
        if let Some(t) = self.send_timeout {
            b = b.send_timeout(t);
        }
        b
    }
}
