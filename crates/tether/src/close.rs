//! Why a connection ended, as a value (like quinn's `ConnectionError`): every connection
//! task, the outbound queue, the hooks and [`Error::Closed`](crate::Error::Closed) carry a
//! [`CloseReason`], so code decides by matching a variant, never by reading text, and each
//! sentence is written once, here.

use std::sync::Arc;
use std::time::Duration;

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its end between packets.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer closed its end in the middle of a packet.
    #[error("peer closed the connection in the middle of a packet ({unread} bytes unread)")]
    Truncated {
        /// Bytes of the unfinished packet.
        unread: usize,
    },
    /// Reading from the socket failed.
    #[error("read failed: {0}")]
    ReadFailed(Arc<str>),
    /// Writing to the socket failed.
    #[error("write failed: {0}")]
    WriteFailed(Arc<str>),
    /// The peer read nothing for the send timeout and was cut off.
    #[error("peer did not read for {timeout:?}; connection cut as a slow consumer")]
    SlowConsumer {
        /// The send timeout.
        timeout: Duration,
    },
    /// The peer sent bytes that are not the protocol.
    #[error("protocol error: {0}")]
    Protocol(Arc<str>),
    /// No completed login within the handshake timeout.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing was received for the idle timeout.
    #[error("nothing received for {0:?} (idle timeout)")]
    IdleTimeout(Duration),
    /// The login was refused (wrong password or secret, or a login the server does not take).
    #[error("login refused: {0}")]
    LoginRefused(Arc<str>),
    /// Something carried over the connection (a stream, a file transfer) failed part-way;
    /// the text says what and what to do.
    #[error("{0}")]
    Failed(Arc<str>),
    /// This side closed the connection after writing what was queued.
    #[error("closed")]
    Closed,
    /// The listener was shut down.
    #[error("server shutting down")]
    Shutdown,
    /// This side ended the connection on purpose (an application's abort, an eviction, a
    /// robot giving up on a silent link); the text says why.
    #[error("{0}")]
    Local(Arc<str>),
}

impl CloseReason {
    /// A reason this side chose, in words.
    pub fn local(why: impl Into<Arc<str>>) -> Self {
        CloseReason::Local(why.into())
    }

    /// Whether the connection ended because the peer did not keep up (so a publish counts
    /// it as cut off).
    pub fn is_slow_consumer(&self) -> bool {
        matches!(self, CloseReason::SlowConsumer { .. })
    }
}
