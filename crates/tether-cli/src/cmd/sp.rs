//! `tether sp`: one socket_protocol request, its response as one JSON line.

use std::time::Duration;

use serde_json::Value;
use tether::sp::{self, Endpoint};

use super::{exit, parse_secs, secs, Failure};
use crate::output;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// HOST:PORT of a socket_protocol server (`tether serve --socket-protocol`).
    addr: String,
    /// Service id of the request (10 read, 20 write, 30 execute, 100 a VSOA route).
    #[arg(long, value_name = "N", required_unless_present = "route")]
    sid: Option<u32>,
    /// Data id of the request.
    #[arg(long, value_name = "N", default_value_t = 0)]
    did: u32,
    /// The request's data: JSON text.
    #[arg(long, value_name = "JSON", conflicts_with = "route")]
    data: Option<String>,
    /// Call this VSOA route through the server's bridge (`/echo`, `SET /publish`): sid 100,
    /// data `{"route": ROUTE, "param": --param}`.
    #[arg(long, value_name = "ROUTE", conflicts_with = "sid")]
    route: Option<String>,
    /// With --route: the route's param, JSON text.
    #[arg(long, value_name = "JSON", requires = "route")]
    param: Option<String>,
    /// The request's status (requests are normally 0).
    #[arg(long, value_name = "N", default_value_t = sp::status::OKAY)]
    status: u32,
    /// The sid the response comes on (default: the response sid of the seed's services,
    /// or of the bridge for 100 and 110).
    #[arg(long, value_name = "N")]
    response_sid: Option<u32>,
    /// Shared secret: authenticate (seed/key) before sending.
    #[arg(
        long,
        value_name = "S",
        env = "TETHER_SP_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// This side's channel name.
    #[arg(long, value_name = "NAME")]
    channel_name: Option<String>,
    /// Seconds to wait for the connection, the authentication and the response each.
    #[arg(long, value_name = "SECS", default_value = secs(sp::DEFAULT_CONNECT_TIMEOUT), value_parser = parse_secs)]
    timeout: Duration,
    #[command(flatten)]
    tls: super::TlsArgs,
}

fn json_arg(flag: &str, text: Option<&str>) -> Result<Value, Failure> {
    match text {
        None => Ok(Value::Null),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| Failure::usage(format!("{flag} is not valid JSON: {e}"))),
    }
}

impl Args {
    /// The request: sid, did, data.
    fn request(&self) -> Result<(u32, Value), Failure> {
        match &self.route {
            Some(route) => {
                let param = json_arg("--param", self.param.as_deref())?;
                Ok((
                    sp::tether_sid::ROUTE_REQUEST,
                    serde_json::json!({ "route": route, "param": param }),
                ))
            }
            None => Ok((
                self.sid.unwrap_or_default(),
                json_arg("--data", self.data.as_deref())?,
            )),
        }
    }

    fn endpoint(&self) -> Result<Endpoint, Failure> {
        let mut e = Endpoint::new()
            .connect_timeout(self.timeout)
            .auth_timeout(self.timeout)
            .send_timeout(self.timeout);
        if let Some(s) = &self.secret {
            e = e.secret(s);
        }
        if let Some(n) = &self.channel_name {
            e = e.channel_name(n);
        }
        if let Some(tls) = self.tls.client_tls()? {
            e = e.client_tls(tls);
        }
        // The bridge's services, so their responses are known here too.
        let _ = e.add_service(
            sp::tether_sid::ROUTE_REQUEST,
            sp::tether_sid::ROUTE_RESPONSE,
            None,
            None,
        );
        let _ = e.add_service(
            sp::tether_sid::SUBSCRIBE_REQUEST,
            sp::tether_sid::SUBSCRIBE_RESPONSE,
            None,
            None,
        );
        Ok(e)
    }
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let (sid, data) = args.request()?;
    let addr = tokio::net::lookup_host(args.addr.as_str())
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::usage(format!("{:?} is not HOST:PORT", args.addr)))?;
    let endpoint = args.endpoint()?;
    let response_sid = match args.response_sid {
        Some(r) => r,
        None => endpoint.response_sid(sid).ok_or_else(|| {
            Failure::usage(format!(
                "sid {sid} is not a request sid this command knows; name its response with --response-sid"
            ))
        })?,
    };
    if args.response_sid.is_some() && endpoint.response_sid(sid).is_none() {
        let _ = endpoint.add_service(sid, response_sid, None, None);
    }
    let peer = endpoint.connect(addr).await?;
    if args.secret.is_some() {
        peer.authenticate(args.timeout).await?;
    }
    peer.send(sid, args.did, data).status(args.status).await?;
    let Some(m) = peer.receive(response_sid, args.did, args.timeout).await else {
        peer.close();
        return Err(Failure {
            message: format!(
                "no response on sid {response_sid}, did {} within {:?}",
                args.did, args.timeout
            ),
            code: exit::TIMEOUT,
        });
    };
    output::print_line(&output::sp_message_json(&m));
    peer.close();
    Ok(())
}
