//! `vsoa://HOST:PORT/PATH` addresses as the command line and the client take them.
//!
//! HOST is an IP address (IPv6 in brackets), `localhost`, or a server *name* that the
//! position service resolves (see [`crate::position`]); for names the port may be omitted
//! and is ignored, as VSOA's clients do.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The host part of a VSOA URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address to connect to directly.
    Ip(IpAddr),
    /// A name for the position service.
    Name(String),
}

/// A parsed VSOA URL.
///
/// ```
/// use tether::VsoaUrl;
/// let u: VsoaUrl = "vsoa://127.0.0.1:3005/sensors/temp".parse().unwrap();
/// assert_eq!(u.socket_addr().unwrap().port(), 3005);
/// assert_eq!(u.path, "/sensors/temp");
/// let v6: VsoaUrl = "vsoa://[::1]:3005".parse().unwrap();
/// assert_eq!(v6.path, "/");
/// let named: VsoaUrl = "vsoa://camera-1/frames".parse().unwrap();
/// assert!(named.socket_addr().is_none(), "resolved through the position service");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsoaUrl {
    /// Where the server is.
    pub host: Host,
    /// The port (required for addresses; ignored for names).
    pub port: Option<u16>,
    /// Path on the server, `/` when the URL has none.
    pub path: String,
}

/// Why a VSOA URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not of the form `vsoa://HOST:PORT[/PATH]`.
    #[error("{url:?} is not a VSOA URL: {why} (expected vsoa://HOST:PORT/PATH, e.g. vsoa://127.0.0.1:3005/echo)")]
    Malformed {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl VsoaUrl {
    /// The socket address, when the host is an address (names need [`VsoaUrl::resolve`]).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match (&self.host, self.port) {
            (Host::Ip(ip), Some(port)) => Some(SocketAddr::new(*ip, port)),
            _ => None,
        }
    }

    /// Where to connect: the address itself, or the position service's answer for a name
    /// (asking `position_servers`, or VSOA's configured ones when empty).
    pub async fn resolve(
        &self,
        position_servers: &[SocketAddr],
    ) -> Result<crate::position::Entry, crate::Error> {
        match (&self.host, self.socket_addr()) {
            (_, Some(sa)) => Ok(crate::position::Entry {
                addr: sa.ip(),
                port: sa.port(),
                security: false,
            }),
            (Host::Name(name), _) if position_servers.is_empty() => {
                crate::position::lookup(name).await
            }
            (Host::Name(name), _) => {
                crate::position::lookup_with(
                    name,
                    position_servers,
                    crate::position::DEFAULT_TIMEOUT,
                )
                .await
            }
            (Host::Ip(_), None) => unreachable_port(),
        }
    }
}

/// Parsing guarantees an address has a port; this keeps that promise total.
fn unreachable_port() -> Result<crate::position::Entry, crate::Error> {
    Err(crate::Error::Address(AddressError::Malformed {
        url: String::new(),
        why: "missing port",
    }))
}

impl fmt::Display for VsoaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        };
        match self.port {
            Some(p) => write!(f, "vsoa://{host}:{p}"),
            None => write!(f, "vsoa://{host}"),
        }
    }
}

impl std::str::FromStr for VsoaUrl {
    type Err = AddressError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |why| AddressError::Malformed {
            url: url.to_string(),
            why,
        };
        let rest = match url.split_once("://") {
            Some(("vsoa", rest)) => rest,
            Some(_) => return Err(bad("the scheme must be vsoa")),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number from 0 to 65535"))
            })
            .transpose()?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let host = if host.eq_ignore_ascii_case("localhost") {
            Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Ip(ip)
        } else if host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Host::Name(host.to_string())
        } else {
            return Err(bad("the host is neither an IP address nor a name"));
        };
        if matches!(host, Host::Ip(_)) && port.is_none() {
            return Err(bad("missing port"));
        }
        Ok(VsoaUrl {
            host,
            port,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let u: VsoaUrl = "vsoa://localhost:1/a/b?x".parse().unwrap();
        assert_eq!(u.socket_addr(), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(u.path, "/a/b?x");
        assert_eq!(u.to_string(), "vsoa://127.0.0.1:1");
        let bare: VsoaUrl = "127.0.0.1:9".parse().unwrap();
        assert_eq!(bare.path, "/");
        let v6: VsoaUrl = "vsoa://[::1]:7/x".parse().unwrap();
        assert_eq!(v6.to_string(), "vsoa://[::1]:7");
        let named: VsoaUrl = "vsoa://myserver:5/x".parse().unwrap();
        assert_eq!(
            (named.host, named.port),
            (Host::Name("myserver".into()), Some(5))
        );
        let portless: VsoaUrl = "vsoa://myserver/x".parse().unwrap();
        assert_eq!(portless.to_string(), "vsoa://myserver");
        for bad in [
            "http://1.2.3.4:5/",
            "vsoa://1.2.3.4",
            "vsoa://1.2.3.4:99999",
            "vsoa://:5",
            "vsoa://[::1:5",
            "vsoa://bad host:1",
        ] {
            assert!(bad.parse::<VsoaUrl>().is_err(), "{bad}");
        }
    }
}
