//! `tether serve`: a server with the demo services, until Ctrl-C.

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Read settings from this TOML file: its keys are the long names of these flags
    /// (`listen = "127.0.0.1:3005"`, `max-connections = 500`, `require-secret = true`).
    /// Flags and environment variables override it; an unknown key is an error.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
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
    /// The password of an encrypted --tls-key (PEM `ENCRYPTED PRIVATE KEY`).
    #[arg(
        long,
        value_name = "PW",
        env = "TETHER_TLS_KEY_PASSWORD",
        hide_env_values = true,
        requires = "tls_key"
    )]
    tls_key_password: Option<String>,
    /// Require client certificates issued by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// With --tls-client-ca: clients may also come without a certificate (Python's
    /// CERT_OPTIONAL); one they present must still be issued by that CA.
    #[arg(long, requires = "tls_client_ca")]
    tls_client_optional: bool,
    /// Also serve clever-show messaging (drone shows) on this TCP address, off by default.
    /// Requests `echo`, `time` and file transfer inside --files-root (docs: README).
    #[arg(long, value_name = "HOST:PORT")]
    clever_show: Option<std::net::SocketAddr>,
    /// A drone that reconnects from the same address within SECS resumes: what was queued
    /// for it and the requests it had not answered go out on its new link (the original
    /// server's behaviour; off by default: each connection is its own peer).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, requires = "clever_show")]
    clever_show_resume: Option<std::time::Duration>,
    /// Also serve socket_protocol on this TCP address, off by default: read, write and
    /// execute requests that echo, and the bridge to the VSOA routes and publishes (sids
    /// 100-112, docs/protocols/socket-protocol.md). TLS with --tls-cert as well.
    #[arg(long, value_name = "HOST:PORT")]
    socket_protocol: Option<String>,
    /// socket_protocol's shared secret: peers must authenticate (seed/key) before anything
    /// but the whitelist reaches a service.
    #[arg(
        long,
        value_name = "S",
        env = "TETHER_SP_SECRET",
        hide_env_values = true,
        requires = "socket_protocol"
    )]
    sp_secret: Option<String>,
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
        default_value = "127.0.0.1:8080"
    )]
    gateway: String,
    /// Do not start the WebSocket gateway (whatever --gateway or TETHER_GATEWAY say).
    #[arg(long)]
    no_gateway: bool,
    #[command(flatten)]
    gw: GatewayArgs,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    fed: super::federate::FederationArgs,
    /// Republish the datagrams clients send to URLs matching PATTERN to every matching
    /// subscriber (reliable as reliable publishes, quick as quick), so clients publish in
    /// one frame. Repeatable; VSOA's subscription rule (`/a/` covers `/a` and everything
    /// under it, `/` all). Off by default; other datagrams are echoed as before.
    #[arg(long, value_name = "PATTERN", value_parser = parse_url_pattern)]
    relay: Vec<String>,
    /// Relayed datagrams per second per client, bursts of as many: over it a TCP sender
    /// is slowed (nothing lost), a quick datagram dropped and counted. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    relay_rate: u32,
    /// Runtime worker threads (default: one per CPU core); 1 serves everything on one
    /// thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
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
    if let Some(file) = &args.config {
        tracing::info!("settings from {} (flags override it)", file.display());
    }
    let built = build(&args)?;
    let running = start(&args, built).await?;
    print_contract(&running);
    wait(running).await
}

/// The server with its demo services and file service, as the arguments configure it.
struct Built {
    server: tether::Server,
    tls: Option<tether::tls::ServerTls>,
    files: tether::files::FileRoot,
}

/// Everything `serve` runs; dropping a handle here would leave its listener running, so
/// [`wait`] shuts them down.
struct Running {
    tls: bool,
    vsoa: tether::Listening,
    gateway: Option<tether::Listening>,
    /// The gateway's 0.7 WebSocket path.
    ws_path: String,
    clever_show: Option<tether::Listening>,
    socket_protocol: Option<tether::Listening>,
    announcer: Option<tether::clevershow::discovery::Announcer>,
    _registration: Option<tether::position::Registration>,
    /// The federation joined with --nats, and the line that says so.
    federation: Option<(std::sync::Arc<tether::federation::Federation>, String)>,
}

fn build(args: &Args) -> Result<Built, Failure> {
    let mut builder = tether::Server::builder().info(serde_json::json!({ "name": args.name }));
    if let Some(pw) = &args.password {
        builder = builder.password(pw);
    }
    let mut tls = None;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let key = match &args.tls_key_password {
            Some(pw) => tether::tls::decrypt_private_key(&super::read_file(key)?, pw)?,
            None => super::read_file(key)?,
        };
        let ca = args
            .tls_client_ca
            .as_deref()
            .map(super::read_file)
            .transpose()?;
        let auth = match &ca {
            Some(ca) if args.tls_client_optional => tether::tls::ClientAuth::Optional(ca),
            Some(ca) => tether::tls::ClientAuth::Required(ca),
            None => tether::tls::ClientAuth::None,
        };
        let server_tls =
            tether::tls::ServerTls::with_client_auth(&super::read_file(cert)?, &key, auth)?;
        builder = builder.tls(server_tls.clone());
        tls = Some(server_tls);
    }
    if let Some(secret) = &args.secret {
        builder = builder.secret(secret).require_secret(args.require_secret);
    }
    if !args.relay.is_empty() {
        tracing::info!(
            "relaying datagrams to {} (at most {} per client per second)",
            args.relay.join(", "),
            args.relay_rate
        );
        builder = builder
            .relay(tether::server::Relay::new(args.relay.clone()).rate_per_client(args.relay_rate));
    }
    let server = crate::demo::datagram_echo(args.limits.apply(builder)).build();
    crate::demo::install(&server);
    let files = tether::files::FileRoot::new(&args.files_root).map_err(|e| Failure {
        message: format!("files root {}: {e}", args.files_root.display()),
        code: crate::cmd::exit::OTHER,
    })?;
    tether::transfer::FileService::new(files.clone())
        .max_size(args.max_file_size)
        .install(&server, "/files/");
    Ok(Built { server, tls, files })
}

/// Binds every listener the arguments ask for and starts the services around them.
async fn start(args: &Args, built: Built) -> Result<Running, Failure> {
    let Built { server, tls, files } = built;
    let vsoa = server.bind(args.listen.as_str()).await?;
    let federation = args.fed.start(&server, vsoa.local_addr()).await?;
    let registration = match args.register {
        Some(pos) => Some(
            tether::position::Registration::start(
                pos,
                &args.name,
                vsoa.local_addr().port(),
                tls.is_some(),
                args.register_ttl,
            )
            .await?,
        ),
        None => None,
    };
    let clever_show = match args.clever_show {
        Some(addr) => {
            let node = tether::clevershow::Node::new();
            if let Some(grace) = args.clever_show_resume {
                node.resume_drones(grace, tether::clevershow::Resume::default());
            }
            crate::demo::install_clever_show(&node)
                .files(files)
                .routes(&server);
            Some(node.bind(addr).await?)
        }
        None => None,
    };
    let socket_protocol = match &args.socket_protocol {
        Some(addr) => {
            let mut endpoint = tether::sp::Endpoint::new().channel_name(&args.name);
            if let Some(secret) = &args.sp_secret {
                endpoint = endpoint.secret(secret);
            }
            if let Some(tls) = &tls {
                endpoint = endpoint.tls(tls.clone());
            }
            crate::demo::install_sp(&endpoint, &server);
            Some(endpoint.bind(addr.as_str()).await?)
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
        let fed = federation.as_ref().map(|f| f.0.clone());
        Some(
            start_gateway(
                args,
                &server,
                tls.as_ref(),
                &vsoa,
                clever_show.as_ref(),
                fed,
            )
            .await?,
        )
    };
    Ok(Running {
        tls: tls.is_some(),
        vsoa,
        gateway,
        ws_path: args.gw.ws_path.clone(),
        clever_show,
        socket_protocol,
        announcer,
        _registration: registration,
        federation,
    })
}

/// The WebSocket gateway with the dashboard.
async fn start_gateway(
    args: &Args,
    server: &tether::Server,
    tls: Option<&tether::tls::ServerTls>,
    vsoa: &tether::Listening,
    clever_show: Option<&tether::Listening>,
    federation: Option<std::sync::Arc<tether::federation::Federation>>,
) -> Result<tether::Listening, Failure> {
    let state = tether_gateway::State::default();
    let ws: crate::dashboard::WsClients = Default::default();
    let seen = ws.clone();
    let o = &args.gw;
    let mut gw = tether_gateway::Gateway::builder(server.clone())
        .ws_path(&o.ws_path)
        .ws06_path((!o.no_ws06).then_some(o.ws06_path.as_str()))
        .autoflush(o.autoflush)
        .parallel_requests(o.parallel_requests);
    if o.ws06_path == o.ws_path && !o.no_ws06 {
        return Err(Failure::usage(format!(
            "--ws-path and --ws06-path are both {}: give the 0.6 WebSocket its own path, or --no-ws06",
            o.ws_path
        )));
    }
    if let Some(tls) = tls {
        gw = gw.tls(tls.clone());
    }
    if let Some(file) = &o.htpasswd {
        let users = tether_gateway::Htpasswd::load(file)
            .map_err(|e| Failure::usage(format!("--htpasswd: {e}")))?;
        gw = gw.htpasswd(users);
    }
    // The page, told where its WebSocket is; once per process, so leaking it is fine.
    let page: &'static str = Box::leak(crate::dashboard::page(&o.ws_path).into_boxed_str());
    gw = gw.page("/dashboard.html", "text/html; charset=utf-8", page);
    match &o.static_dir {
        Some(dir) if !dir.is_dir() => {
            return Err(Failure::usage(format!(
                "--static-dir {}: not a directory",
                dir.display()
            )))
        }
        Some(dir) => gw = gw.static_dir(dir),
        None => gw = gw.page("/index.html", "text/html; charset=utf-8", page),
    }
    if let Some(fed) = &federation {
        let fed = fed.clone();
        gw = gw.metrics(move |out| super::federate::metrics(&fed.stats(), out));
    }
    let gw = gw
        .shared_state(state.clone())
        .on_connection(move |c| seen.lock().unwrap_or_else(|e| e.into_inner()).push(c))
        .build();
    let bound = gw.bind(args.gateway.as_str()).await.map_err(|e| Failure {
        message: format!("{e} (the WebSocket gateway; move it with --gateway HOST:PORT or turn it off with --no-gateway)"),
        code: crate::cmd::exit::OTHER,
    })?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let info = crate::dashboard::Info {
        name: args.name.clone(),
        vsoa: format!("vsoa://{}", vsoa.local_addr()),
        gateway: format!("{scheme}://{}{}", bound.local_addr(), o.ws_path),
        clever_show: clever_show.map(|c| c.local_addr().to_string()),
    };
    crate::dashboard::start(server.clone(), state, info, ws, federation);
    Ok(bound)
}

/// The lines scripts rely on (README): the VSOA address first, then the gateway,
/// clever-show and socket_protocol ones.
fn print_contract(running: &Running) {
    crate::output::print_line(&format!(
        "tether: VSOA server on vsoa://{}",
        running.vsoa.local_addr()
    ));
    if let Some(gw) = &running.gateway {
        let scheme = if running.tls { "wss" } else { "ws" };
        crate::output::print_line(&format!(
            "tether: gateway on {scheme}://{}{}",
            gw.local_addr(),
            running.ws_path
        ));
    }
    if let Some(cs) = &running.clever_show {
        crate::output::print_line(&format!("tether: clever-show on {}", cs.local_addr()));
    }
    if let Some(sp) = &running.socket_protocol {
        crate::output::print_line(&format!("tether: socket_protocol on {}", sp.local_addr()));
    }
    if let Some((_, line)) = &running.federation {
        crate::output::print_line(line);
    }
}

/// Serves until Ctrl-C, stopping clever-show if an older server announces itself, then
/// shuts down.
async fn wait(running: Running) -> Result<(), Failure> {
    let Running {
        vsoa,
        gateway,
        mut clever_show,
        socket_protocol,
        announcer,
        _registration,
        // Held to the end: dropping it would leave the federation.
        federation: _federation,
        ..
    } = running;
    let ctrl_c = || async {
        tokio::signal::ctrl_c().await.map_err(|e| Failure {
            message: format!("cannot wait for Ctrl-C: {e}"),
            code: crate::cmd::exit::OTHER,
        })
    };
    let yielded = async {
        match &announcer {
            Some(a) => a.yielded().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = ctrl_c() => done?,
        older = yielded => {
            // The original's "younger server yields": stop serving clever-show, keep VSOA.
            if let Some(cs) = clever_show.take() {
                cs.shutdown().await;
            }
            crate::output::print_line(&format!(
                "tether: clever-show stopped: server {} at {}:{} started earlier",
                older.id, older.host, older.port
            ));
            ctrl_c().await?;
        }
    }
    tracing::info!("shutting down");
    vsoa.shutdown().await;
    if let Some(gw) = gateway {
        gw.shutdown().await;
    }
    if let Some(cs) = clever_show {
        cs.shutdown().await;
    }
    if let Some(sp) = socket_protocol {
        sp.shutdown().await;
    }
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
    #[arg(
        long,
        value_name = "SECS",
        default_value = super::secs(tether::clevershow::discovery::DEFAULT_ANNOUNCE_EVERY),
        value_parser = super::parse_secs
    )]
    announce_every: std::time::Duration,
    /// The host announced (default: the clever-show listener's IP address; for a listener
    /// on 0.0.0.0, the address of the interface with a route out).
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
            .unwrap_or_else(|| tether::clevershow::discovery::host_to_announce(show));
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

/// The gateway's options, named as hat-juggler's `listen` names them (docs/gateway.md).
#[derive(clap::Args)]
struct GatewayArgs {
    /// Path of the gateway's hat-juggler 0.7 WebSocket.
    #[arg(long, value_name = "PATH", default_value = "/ws", value_parser = parse_http_path)]
    ws_path: String,
    /// Path of the gateway's hat-juggler 0.6 WebSocket (one bare JSON message per frame).
    #[arg(long, value_name = "PATH", default_value = "/ws06", value_parser = parse_http_path)]
    ws06_path: String,
    /// No hat-juggler 0.6 WebSocket.
    #[arg(long)]
    no_ws06: bool,
    /// Require HTTP Basic auth on every gateway route (WebSocket, dashboard, files,
    /// /metrics) from the users of this htpasswd file (`$apr1$` or bcrypt hashes).
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<std::path::PathBuf>,
    /// Serve the files of DIR under `/` (`/` redirects to `/index.html`, which is then
    /// yours); the dashboard stays at `/dashboard.html`.
    #[arg(long, value_name = "DIR")]
    static_dir: Option<std::path::PathBuf>,
    /// State changes reach juggler clients within this many seconds (0: at each change;
    /// `manual`: when the application flushes; the dashboard flushes every second).
    #[arg(long, value_name = "SECS|manual", default_value = "0.2", value_parser = parse_autoflush)]
    autoflush: tether_gateway::Autoflush,
    /// Serve each juggler connection's requests concurrently (answers may overtake
    /// each other); by default in order.
    #[arg(long)]
    parallel_requests: bool,
}

fn parse_http_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.contains(['?', '#', ' ']) {
        return Err(format!(
            "{s:?} is not a URL path: start it with / (e.g. /ws), without ?, # or spaces"
        ));
    }
    Ok(s.to_string())
}

fn parse_autoflush(s: &str) -> Result<tether_gateway::Autoflush, String> {
    if s == "manual" {
        return Ok(tether_gateway::Autoflush::Manual);
    }
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => {
            Ok(tether_gateway::Autoflush::from_secs(Some(secs)))
        }
        _ => Err(format!(
            "{s:?}: give seconds from 0 to 3600 (0: at each change) or `manual`"
        )),
    }
}

/// The server limits (docs/security.md); each default shown is the library's
/// (`tether::Config::default()`).
#[derive(clap::Args)]
struct Limits {
    /// Connections held at once.
    #[arg(long, value_name = "N", default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// Connections waiting to log in; a newcomer evicts the oldest.
    #[arg(long, value_name = "N", default_value_t = defaults().max_pending_logins)]
    max_pending_logins: usize,
    /// RPCs of one client running at once.
    #[arg(long, value_name = "N", default_value_t = defaults().max_in_flight_per_client)]
    max_in_flight: usize,
    /// Subscriptions per client.
    #[arg(long, value_name = "N", default_value_t = defaults().max_subscriptions_per_client)]
    max_subscriptions: usize,
    /// Longest URL in bytes.
    #[arg(long, value_name = "N", default_value_t = defaults().max_url_len)]
    max_url_len: usize,
    /// New connections per second per IP address (default: no limit).
    #[arg(long, value_name = "N")]
    connection_rate: Option<u32>,
    /// Seconds a connection has to log in.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs,
          default_value = super::secs(defaults().handshake_timeout))]
    handshake_timeout: std::time::Duration,
    /// Seconds without a packet before a connection is closed (default: never).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
    idle_timeout: Option<std::time::Duration>,
    /// Seconds a client may leave its queue full before it is cut off.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs,
          default_value = super::secs(defaults().send_timeout))]
    send_timeout: std::time::Duration,
}

/// A relay pattern is a URL as VSOA allows it (starting with `/`).
pub(crate) fn parse_url_pattern(s: &str) -> Result<String, String> {
    match tether_wire::url::check_url(s.as_bytes()) {
        Ok(url) => Ok(url.to_string()),
        Err(e) => Err(format!("{e} (a pattern is a URL such as /sensors/ or /)")),
    }
}

fn defaults() -> tether::Config {
    tether::Config::default()
}

impl Limits {
    fn apply(&self, mut b: tether::ServerBuilder) -> tether::ServerBuilder {
        b = b
            .max_connections(self.max_connections)
            .max_pending_logins(self.max_pending_logins)
            .max_in_flight_per_client(self.max_in_flight)
            .max_subscriptions_per_client(self.max_subscriptions)
            .max_url_len(self.max_url_len)
            .handshake_timeout(self.handshake_timeout)
            .send_timeout(self.send_timeout);
        if let Some(n) = self.connection_rate {
            b = b.connection_rate_per_ip(n);
        }
        if let Some(t) = self.idle_timeout {
            b = b.idle_timeout(t);
        }
        b
    }
}
