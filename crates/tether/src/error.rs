//! The runtime's error type. Every variant reads as a sentence a user can act on. What is
//! particular to one subsystem has its own type there (TLS, position lookups, files,
//! clever-show), carried here with `#[from]`, so a caller can match either level.

use std::net::SocketAddr;
use std::time::Duration;

use tether_wire::url::UrlError;
use tether_wire::vsoa::{EncodeError, Status};

use crate::address::AddressError;
use crate::CloseReason;

/// Errors of Tether's server and client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TCP connect failed (refused, unreachable, ...).
    #[error("cannot reach vsoa://{addr}: {source}")]
    Unreachable {
        /// Server address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No complete handshake within the connect timeout.
    #[error("vsoa://{addr} did not complete the handshake within {timeout:?}")]
    ConnectTimeout {
        /// Server address.
        addr: SocketAddr,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The server rejected the password (or wanted one and got none).
    #[error("wrong password for vsoa://{addr}")]
    WrongPassword {
        /// Server address.
        addr: SocketAddr,
    },
    /// The server refused the challenge login: wrong secret, or it accepts none.
    #[error("wrong secret for vsoa://{addr}, or it does not accept challenge login")]
    WrongSecret {
        /// Server address.
        addr: SocketAddr,
    },
    /// The server answered something that is not valid VSOA.
    #[error("vsoa://{addr} sent a malformed reply: {detail}")]
    Malformed {
        /// Server address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// A request got no reply in time.
    #[error("no reply to {what} from vsoa://{addr} within {timeout:?}")]
    Timeout {
        /// Server address.
        addr: SocketAddr,
        /// What was asked (e.g. "RPC /echo").
        what: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The connection is closed; pending and later requests fail with this.
    #[error("connection closed: {reason}")]
    Closed {
        /// Why it closed.
        reason: CloseReason,
    },
    /// The peer read nothing for the send timeout and was cut off (by this send).
    #[error("{}", CloseReason::SlowConsumer { timeout: *timeout })]
    SlowConsumer {
        /// The send timeout.
        timeout: Duration,
    },
    /// The server answered a subscribe/unsubscribe with a failure status.
    #[error("the server refused {what}: status {status}")]
    Refused {
        /// What was asked.
        what: String,
        /// The status it answered.
        status: Status,
    },
    /// A quick (UDP) send where there is no quick channel: the peer advertised no UDP port,
    /// or the quick channel is turned off.
    #[error("no quick channel: the peer advertised no UDP port, or the quick channel is off")]
    NoQuickChannel,
    /// A robot had no connection for the whole time a request could wait for one.
    #[error("no connection to the server within {waited:?}")]
    NoLink {
        /// How long it waited.
        waited: Duration,
    },
    /// Nobody connected to a server stream in time.
    #[error("nobody connected to stream port {port} within {timeout:?}")]
    StreamTimeout {
        /// The stream's port (tunid).
        port: u16,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The peer answered a request with an error (clever-show error response).
    #[error("{what} failed on the peer: {reason}")]
    Remote {
        /// What was asked.
        what: String,
        /// The peer's reason.
        reason: String,
    },
    /// TLS: a setup that cannot be used, or a failed handshake.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A name the position service could not resolve.
    #[error(transparent)]
    Lookup(#[from] crate::position::LookupError),
    /// A file transfer refused or failed on this side.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// clever-show: a message given up, or no server heard.
    #[error(transparent)]
    CleverShow(#[from] crate::clevershow::ShowError),
    /// A socket_protocol failure.
    #[error(transparent)]
    Sp(#[from] crate::sp::SpError),
    /// A path a files root refused.
    #[error(transparent)]
    Path(#[from] crate::files::PathError),
    /// A `vsoa://` address that cannot be used.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A URL that VSOA does not accept.
    #[error("invalid URL: {0}")]
    Url(#[from] UrlError),
    /// A packet over VSOA's size limits.
    #[error("cannot send: {0}")]
    Encode(#[from] EncodeError),
    /// A param that could not be turned into JSON.
    #[error("cannot encode JSON param: {0}")]
    Json(#[from] serde_json::Error),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
