//! `tether serve --nats`: joining a federation of nodes over NATS (docs/federation.md),
//! its `/metrics` lines, and the `--echo-route` test aid.

use std::sync::Arc;

use tether::federation::{Federation, FederationConfig, FederationStats};
use tether::server::{Reply, Request};

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct FederationArgs {
    /// Join the federation of `tether serve` nodes through these NATS servers (comma
    /// separated or repeated; tried in this order, so list the nearest first). Publishes
    /// then reach subscribers on every node and calls reach the node serving the route.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    nats: Vec<String>,
    /// This node's name in the federation (default: host name and VSOA port).
    #[arg(long, value_name = "NAME", requires = "nats")]
    node: Option<String>,
    /// First token of every NATS subject the federation uses; nodes with different
    /// prefixes on one NATS cluster do not see each other.
    #[arg(long, value_name = "P", default_value = "tether", requires = "nats")]
    nats_prefix: String,
    /// A NATS credentials file (JWT and nkey seed), as `nats` and `nsc` write them.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_creds: Option<std::path::PathBuf>,
    /// Verify the NATS servers' TLS certificates with these CAs (PEM); requires TLS.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for NATS servers that ask for one; needs --nats-tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["nats", "nats_tls_key"])]
    nats_tls_cert: Option<std::path::PathBuf>,
    /// The key of --nats-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    nats_tls_key: Option<std::path::PathBuf>,
    /// The IP this node's streams for other nodes listen on and that it dials theirs from:
    /// the address the other nodes reach it at (default: the --listen IP, or 127.0.0.1
    /// when that is unspecified).
    #[arg(long, value_name = "IP", requires = "nats")]
    nats_stream_host: Option<std::net::IpAddr>,
    /// Seconds a call waits for the node serving it before answering status 4.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = super::parse_secs,
          requires = "nats")]
    nats_rpc_timeout: std::time::Duration,
    /// Serve PATTERN on this node, answering {"node": NAME, "url": URL, "param": PARAM}
    /// with the request's data (for tests and demos of a federation: which node served a
    /// call); a param
    /// {"blob": N} also opens a stream of N bytes as /stream/blob does. Repeatable.
    #[arg(long, value_name = "PATTERN", value_parser = super::serve::parse_url_pattern)]
    echo_route: Vec<String>,
}

impl FederationArgs {
    /// This node's name: `--node`, else host name and VSOA port.
    fn node_name(&self, vsoa: std::net::SocketAddr) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "tether".into());
            format!("{host}:{}", vsoa.port())
        })
    }

    /// Installs the echo routes and joins the federation if `--nats` was given; returns
    /// the membership and the line to print.
    pub(crate) async fn start(
        &self,
        server: &tether::Server,
        vsoa: std::net::SocketAddr,
    ) -> Result<Option<(Arc<Federation>, String)>, Failure> {
        let node = self.node_name(vsoa);
        for pattern in &self.echo_route {
            let name = node.clone();
            server.route(pattern, move |req: Request| {
                let name = name.clone();
                async move {
                    let param = req.payload.param_value();
                    let mut reply = Reply::json(&serde_json::json!({
                        "node": name,
                        "url": req.url(),
                        "param": param,
                    }))
                    .unwrap_or_default();
                    reply.payload.data = req.payload.data.clone();
                    match param.as_ref().and_then(|p| p["blob"].as_u64()) {
                        Some(n) if n <= crate::demo::MAX_BLOB => {
                            req.with_stream(reply, move |mut s| async move {
                                if let Err(e) = crate::demo::write_blob(&mut s, n).await {
                                    tracing::debug!("echo-route blob ended early: {e}");
                                }
                            })
                            .await
                        }
                        _ => reply,
                    }
                }
            });
        }
        if self.nats.is_empty() {
            return Ok(None);
        }
        let mut config = FederationConfig::new(self.nats.clone(), node.clone());
        config.prefix = self.nats_prefix.clone();
        config.credentials = self.nats_creds.clone();
        config.tls_ca = self.nats_tls_ca.clone();
        config.tls_client = self.nats_tls_cert.clone().zip(self.nats_tls_key.clone());
        config.rpc_timeout = self.nats_rpc_timeout;
        config.stream_host = self
            .nats_stream_host
            .unwrap_or(if vsoa.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                vsoa.ip()
            });
        let fed = Federation::join(server, config)
            .await
            .map_err(|e| Failure::usage(format!("--nats: {e}")))?;
        let line = format!(
            "tether: federation via {} as node {node}",
            self.nats.join(",")
        );
        Ok(Some((Arc::new(fed), line)))
    }
}

/// The `tether_federation_*` lines of `/metrics`.
pub(crate) fn metrics(s: &FederationStats, out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let samples: Vec<(&str, f64)> = samples.iter().map(|&(l, v)| (l, v as f64)).collect();
        tether_gateway::metric(out, name, kind, help, &samples);
    };
    metric(
        "tether_federation_connected",
        "gauge",
        "1 while the NATS connection is up.",
        &[("", u64::from(s.connected))],
    );
    metric(
        "tether_federation_connects_total",
        "counter",
        "NATS connections made (the first and every reconnect).",
        &[("", s.connects)],
    );
    metric(
        "tether_federation_forwarded_total",
        "counter",
        "Publishes sent to the other nodes.",
        &[("", s.forwarded)],
    );
    metric(
        "tether_federation_received_total",
        "counter",
        "Publishes from other nodes delivered here.",
        &[("", s.received)],
    );
    metric(
        "tether_federation_dropped_total",
        "counter",
        "Publishes that did not cross nodes, by reason.",
        &[
            ("reason=\"disconnected\"", s.dropped_disconnected),
            ("reason=\"queue_full\"", s.dropped_queue_full),
            ("reason=\"too_long\"", s.dropped_too_long),
            ("reason=\"nats_error\"", s.dropped_nats_error),
            ("reason=\"slow_consumer\"", s.slow_consumer),
        ],
    );
    metric(
        "tether_federation_duplicates_total",
        "counter",
        "Second copies of a publish dropped while subscriptions changed.",
        &[("", s.duplicates)],
    );
    metric(
        "tether_federation_malformed_total",
        "counter",
        "NATS messages on Tether subjects that were not Tether's, ignored.",
        &[("", s.malformed)],
    );
    metric(
        "tether_federation_subscriptions",
        "gauge",
        "NATS subscriptions held for this node's subscribers.",
        &[("", s.subscriptions as u64)],
    );
    metric(
        "tether_federation_routes",
        "gauge",
        "Route levels this node serves to the others.",
        &[("", s.routes as u64)],
    );
    metric(
        "tether_federation_peers",
        "gauge",
        "Other nodes heard from (each announces itself every 2 s).",
        &[("", s.peers.len() as u64)],
    );
    metric(
        "tether_federation_remote_patterns",
        "gauge",
        "Patterns the other nodes subscribed to (publishes matching none stay here).",
        &[("", s.remote_patterns as u64)],
    );
    metric(
        "tether_federation_rpc_total",
        "counter",
        "Calls across nodes, by result.",
        &[
            ("result=\"remote\"", s.rpc_remote),
            ("result=\"served\"", s.rpc_served),
            ("result=\"local_fallback\"", s.rpc_local_fallback),
            ("result=\"unreachable\"", s.rpc_unreachable),
            ("result=\"timeout\"", s.rpc_timeout),
        ],
    );
}
