//! `vsoa://HOST:PORT/PATH` addresses as the command line and the client take them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A parsed VSOA URL: where the server is and which path on it.
///
/// ```
/// use tether::VsoaUrl;
/// let u: VsoaUrl = "vsoa://127.0.0.1:3005/sensors/temp".parse().unwrap();
/// assert_eq!(u.addr.port(), 3005);
/// assert_eq!(u.path, "/sensors/temp");
/// let v6: VsoaUrl = "vsoa://[::1]:3005".parse().unwrap();
/// assert_eq!(v6.path, "/");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsoaUrl {
    /// Server socket address.
    pub addr: SocketAddr,
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
    /// A host name other than `localhost`.
    #[error("host {host:?}: VSOA resolves host names through its position service, which Tether does not support yet; use an IP address or localhost")]
    NameLookup {
        /// The host name.
        host: String,
    },
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
            let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
            (host, port)
        } else {
            authority
                .rsplit_once(':')
                .ok_or_else(|| bad("missing port"))?
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if host.is_empty() {
            return Err(bad("missing host"));
        } else {
            host.parse().map_err(|_| AddressError::NameLookup {
                host: host.to_string(),
            })?
        };
        Ok(VsoaUrl {
            addr: SocketAddr::new(ip, port),
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
        assert_eq!(u.addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(u.path, "/a/b?x");
        let bare: VsoaUrl = "127.0.0.1:9".parse().unwrap();
        assert_eq!(bare.path, "/");
        for bad in [
            "http://1.2.3.4:5/",
            "vsoa://1.2.3.4",
            "vsoa://1.2.3.4:99999",
            "vsoa://:5",
            "vsoa://[::1:5",
        ] {
            assert!(
                matches!(bad.parse::<VsoaUrl>(), Err(AddressError::Malformed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "vsoa://myserver:5/x".parse::<VsoaUrl>(),
            Err(AddressError::NameLookup { .. })
        ));
    }
}
