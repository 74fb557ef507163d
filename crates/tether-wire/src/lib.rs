//! Sans-IO building blocks of Tether: bytes in, typed messages out.
//!
//! Nothing here touches a socket, a clock or an async runtime, so every rule of the wire
//! formats can be tested with plain byte vectors and fuzzed. The runtime crate (`tether`)
//! drives these types over TCP, UDP, TLS and WebSocket.
//!
//! * [`vsoa`]: the VSOA packet model, its encoder and its streaming decoder
//!   (`docs/protocols/vsoa.md` §1-3).
//! * [`clevershow`]: the clever-show drone-show framing (docs/protocols/clever-show.md B.2).
//! * [`url`]: VSOA URL rules: RPC route lookup and publish/subscribe matching
//!   (docs/protocols/vsoa.md §6-7), including the [`url::SubscriptionIndex`] that answers
//!   "who subscribed to this URL" without scanning every client.
//! * [`sp`]: socket_protocol messages (status, service id, data id, JSON data) and their
//!   checksummed framing (docs/protocols/socket-protocol.md §2-§4).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clevershow;
pub mod juggler;
pub mod python_json;
pub mod sp;
pub mod url;
pub mod vsoa;

/// What the codecs' tests share.
#[cfg(test)]
mod testing {
    /// Parses a hex dump with arbitrary spacing and `|` separators.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| b.is_ascii_hexdigit())
            .map(|b| (b as char).to_digit(16).unwrap() as u8)
            .collect();
        assert!(
            digits.len().is_multiple_of(2),
            "odd hex digit count in {s:?}"
        );
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }
}
