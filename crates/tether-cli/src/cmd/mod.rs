//! One module per subcommand, and the exit-code convention they share.

pub(crate) mod bench;
pub(crate) mod call;
pub(crate) mod config;
pub(crate) mod dgram;
pub(crate) mod discover;
pub(crate) mod federate;
pub(crate) mod files;
pub(crate) mod position;
pub(crate) mod serve;
pub(crate) mod sp;
pub(crate) mod stream;
pub(crate) mod sub;

use std::time::Duration;

/// The process exit codes every command shares (README, "The `tether` command").
pub(crate) mod exit {
    /// Any other failure.
    pub(crate) const OTHER: u8 = 1;
    /// Bad usage: arguments, a configuration file (clap uses 2 as well).
    pub(crate) const USAGE: u8 = 2;
    /// The server is unreachable or the connection was lost.
    pub(crate) const UNREACHABLE: u8 = 3;
    /// Wrong password or secret.
    pub(crate) const WRONG_PASSWORD: u8 = 4;
    /// A timeout ran out (or nothing was heard in time).
    pub(crate) const TIMEOUT: u8 = 5;
}

/// A command's failure: the sentence for stderr and the process exit code (see [`exit`]).
pub(crate) struct Failure {
    pub message: String,
    pub code: u8,
}

impl From<tether::Error> for Failure {
    fn from(e: tether::Error) -> Self {
        use tether::sp::SpError;
        let code = match &e {
            tether::Error::Unreachable { .. }
            | tether::Error::Closed { .. }
            | tether::Error::Tls(tether::tls::TlsError::Handshake { .. })
            | tether::Error::Sp(SpError::Unreachable { .. } | SpError::NotSent { .. }) => {
                exit::UNREACHABLE
            }
            tether::Error::WrongPassword { .. }
            | tether::Error::WrongSecret { .. }
            | tether::Error::Sp(SpError::AuthFailed(_)) => exit::WRONG_PASSWORD,
            tether::Error::Timeout { .. }
            | tether::Error::ConnectTimeout { .. }
            | tether::Error::CleverShow(tether::clevershow::ShowError::NoAnnouncement { .. })
            | tether::Error::Sp(
                SpError::ConnectTimeout { .. }
                | SpError::NotConnected { .. }
                | SpError::NotTrusted { .. }
                | SpError::SendTimeout { .. }
                | SpError::AuthTimeout(_),
            ) => exit::TIMEOUT,
            _ => exit::OTHER,
        };
        Failure {
            message: e.to_string(),
            code,
        }
    }
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: crate::cmd::exit::USAGE,
        }
    }
}

/// A duration as the `SECS` flags take it (`0.5`, `10`): for help texts that show the
/// library's defaults.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// Parses a positive number of seconds for `--timeout`.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// The param and data options of commands that send a message.
#[derive(clap::Args)]
pub(crate) struct PayloadArgs {
    /// Param: JSON text, sent as given.
    #[arg(long, value_name = "JSON")]
    param: Option<String>,
    /// Data, base64-encoded.
    #[arg(long, value_name = "B64")]
    data_base64: Option<String>,
}

impl PayloadArgs {
    /// The payload, or a usage failure saying which option is malformed.
    pub(crate) fn payload(&self) -> Result<tether::Payload, Failure> {
        use base64::Engine;
        let param = match &self.param {
            Some(text) => {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| Failure::usage(format!("--param is not valid JSON: {e}")))?;
                bytes::Bytes::from(text.clone().into_bytes())
            }
            None => bytes::Bytes::new(),
        };
        let data = match &self.data_base64 {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Failure::usage(format!("--data-base64 is not valid base64: {e}")))?,
            None => Vec::new(),
        };
        Ok(tether::Payload::raw(param).with_data(data))
    }
}

/// Options every command that connects to a server takes.
#[derive(clap::Args)]
pub(crate) struct ConnectArgs {
    /// Server password.
    #[arg(
        long,
        value_name = "PW",
        env = "TETHER_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Shared secret: log in by challenge (HMAC-SHA256), the secret never crosses the wire.
    #[arg(long, value_name = "S", env = "TETHER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Seconds to wait for the connection (and for `call`, for the reply).
    #[arg(long, value_name = "SECS", default_value = secs(tether::client::DEFAULT_CONNECT_TIMEOUT), value_parser = parse_secs)]
    pub timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// Position server for resolving a server name (default: VSOA_POS_SERVER, then
    /// /etc/vsoa.pos). May be repeated.
    #[arg(long = "pos", value_name = "ADDR", value_parser = parse_pos)]
    position_servers: Vec<std::net::SocketAddr>,
}

/// The TLS options of every command that connects.
#[derive(clap::Args)]
pub(crate) struct TlsArgs {
    /// Connect over TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Connect over TLS trusting the system's CA certificates (the distribution's bundle,
    /// or SSL_CERT_FILE / SSL_CERT_DIR), and --tls-ca's too if given.
    #[arg(long)]
    tls_system_roots: bool,
    /// Name to verify in the server certificate (default: the server's IP address).
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
}

impl TlsArgs {
    /// The client TLS setup these flags give, if --tls-ca is there.
    pub(crate) fn client_tls(&self) -> Result<Option<tether::tls::ClientTls>, Failure> {
        let cert = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        let mut tls = match (&self.tls_ca, self.tls_system_roots) {
            (None, false) => {
                if self.tls_name.is_some() || self.tls_cert.is_some() {
                    return Err(Failure::usage(
                        "--tls-name and --tls-cert need --tls-ca or --tls-system-roots",
                    ));
                }
                return Ok(None);
            }
            (Some(ca), false) => tether::tls::ClientTls::from_pem_files(ca, cert)?,
            (ca, true) => {
                let ca = ca.as_deref().map(read_file).transpose()?;
                let cert = match cert {
                    Some((c, k)) => Some((read_file(c)?, read_file(k)?)),
                    None => None,
                };
                tether::tls::ClientTls::with_system_roots(
                    ca.as_deref(),
                    cert.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
                )?
            }
        };
        if let Some(name) = &self.tls_name {
            tls = tls.server_name(name);
        }
        Ok(Some(tls))
    }
}

/// Reads a file a flag names; failing is a usage error that names it.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
}

/// Parses a VSOA URL that names a route: `vsoa://HOST:PORT` alone names none (the library
/// takes it as `/`, which a command line would do silently), so it is refused.
pub(crate) fn parse_route_url(s: &str) -> Result<tether::VsoaUrl, String> {
    let url: tether::VsoaUrl = s.parse().map_err(|e: tether::AddressError| e.to_string())?;
    let after_scheme = s.split_once("://").map_or(s, |(_, rest)| rest);
    if !after_scheme.contains('/') {
        return Err(format!(
            "{s:?} names no route: add its path, e.g. {s}/echo, or {s}/ for the route /"
        ));
    }
    Ok(url)
}

/// Parses a position server address (`ip:port`, `[v6]:port`, or an address for port 54).
pub(crate) fn parse_pos(s: &str) -> Result<std::net::SocketAddr, String> {
    tether::position::parse_server(s).ok_or_else(|| format!("{s:?} is not ip:port"))
}

impl ConnectArgs {
    /// The connection options these flags give.
    pub(crate) fn options(&self) -> Result<tether::client::ConnectOptions, Failure> {
        let mut options = tether::client::ConnectOptions::default()
            .connect_timeout(self.timeout)
            .position_servers(self.position_servers.clone());
        if let Some(pw) = &self.password {
            options = options.password(pw);
        }
        if let Some(secret) = &self.secret {
            options = options.secret(secret);
        }
        if let Some(tls) = self.tls.client_tls()? {
            options = options.tls(tls);
        }
        Ok(options)
    }

    /// Connects to the server of `url`.
    pub(crate) async fn connect(&self, url: &tether::VsoaUrl) -> Result<tether::Client, Failure> {
        let options = self.options()?;
        Ok(tether::Client::connect(&url.to_string())
            .options(options)
            .await?)
    }
}
