//! The juggler protocol (hat-juggler 0.7, docs/protocols/juggler.md), sans-IO: the transport
//! framing of WebSocket text frames (§1.3), the user-layer messages (§2) and the JSON diff
//! and patch that state sync uses (§6).
//!
//! Every text frame starts with one header character: `0` the last (or only) segment of a
//! message, `1` a segment with more to follow, `2` a ping, `3` its pong (echoing the
//! payload). Messages are JSON cut into segments of at most `max_segment_size`; we write
//! JSON with non-ASCII escaped, as Python does, so every cut falls on a character boundary
//! and segment sizes mean the same in every peer.

mod diff;
mod message;

pub use diff::{diff, patch, PatchError};
pub use message::{Message, MessageError, Parsed};

use serde_json::Value;

/// Default largest segment (hat-juggler's `max_segment_size`).
pub const DEFAULT_MAX_SEGMENT: usize = 65_536;

/// One WebSocket text frame, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package<'a> {
    /// A piece of a message's JSON; `last` for header `0`.
    Segment {
        /// Whether this ends the message.
        last: bool,
        /// The piece.
        text: &'a str,
    },
    /// `2`: answer with [`pong`] at once.
    Ping(&'a str),
    /// `3`: an answer to our ping.
    Pong(&'a str),
}

/// Why a frame or message cannot be taken (the connection is closed with code 1000).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An empty text frame.
    #[error("empty juggler frame")]
    Empty,
    /// A header other than `0`-`3` (a bare `{` is a 0.6 peer).
    #[error("unknown juggler frame header {0:?}{hint}", hint = if *.0 == '{' { " (a hat-juggler 0.6 peer? 0.7 framing is required)" } else { "" })]
    UnknownHeader(char),
    /// A message that grew over the limit before its last segment.
    #[error("juggler message over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The joined segments are not JSON.
    #[error("juggler message is not valid JSON: {0}")]
    Json(String),
}

/// Reads one text frame.
pub fn parse_frame(frame: &str) -> Result<Package<'_>, FrameError> {
    let mut chars = frame.chars();
    let header = chars.next().ok_or(FrameError::Empty)?;
    let rest = chars.as_str();
    match header {
        '0' => Ok(Package::Segment {
            last: true,
            text: rest,
        }),
        '1' => Ok(Package::Segment {
            last: false,
            text: rest,
        }),
        '2' => Ok(Package::Ping(rest)),
        '3' => Ok(Package::Pong(rest)),
        other => Err(FrameError::UnknownHeader(other)),
    }
}

/// The pong frame answering a ping with `payload`.
pub fn pong(payload: &str) -> String {
    format!("3{payload}")
}

/// The ping frame we send (empty payload, as Python and JS do).
pub const PING: &str = "2";

/// Cuts a message's JSON text into frames of at most `max` characters of payload each,
/// every one but the last headed `1`, the last `0`. Cuts fall on character boundaries.
pub fn segments(json: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::with_capacity(json.len() / max + 1);
    let mut rest = json;
    loop {
        // The byte index after `max` characters (or the end).
        let cut = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(cut);
        let header = if tail.is_empty() { '0' } else { '1' };
        let mut frame = String::with_capacity(piece.len() + 1);
        frame.push(header);
        frame.push_str(piece);
        out.push(frame);
        if tail.is_empty() {
            return out;
        }
        rest = tail;
    }
}

/// Joins segments into messages; a message may not grow over `max` bytes.
#[derive(Debug, Clone)]
pub struct Reassembler {
    buf: String,
    max: usize,
}

impl Reassembler {
    /// A reassembler refusing messages over `max` bytes.
    pub fn new(max: usize) -> Self {
        Reassembler {
            buf: String::new(),
            max,
        }
    }

    /// Takes one segment; returns the whole message's JSON after its last one.
    pub fn push(&mut self, text: &str, last: bool) -> Result<Option<Value>, FrameError> {
        self.push_as(text, last)
    }

    /// Like [`Reassembler::push`], read as `T` (a [`Parsed`] message skips building a
    /// `Value` for it).
    pub fn push_as<T: serde::de::DeserializeOwned>(
        &mut self,
        text: &str,
        last: bool,
    ) -> Result<Option<T>, FrameError> {
        if self.buf.len() + text.len() > self.max {
            self.buf = String::new();
            return Err(FrameError::TooLarge { max: self.max });
        }
        if !last {
            self.buf.push_str(text);
            return Ok(None);
        }
        let parsed = if self.buf.is_empty() {
            serde_json::from_str(text)
        } else {
            self.buf.push_str(text);
            serde_json::from_str(&self.buf)
        };
        self.buf = String::new();
        parsed
            .map(Some)
            .map_err(|e| FrameError::Json(e.to_string()))
    }

    /// Bytes waiting for the rest of their message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// `value` as Python's `json.dumps(value)` writes it (pure ASCII).
pub fn to_json(value: &Value) -> String {
    crate::python_json::python_json_ascii(value)
}

#[cfg(test)]
mod tests;
