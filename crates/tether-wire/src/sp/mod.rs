//! socket_protocol messages and their framing (docs/protocols/socket-protocol.md §2-§4).
//!
//! A message is a status, a service id, a data id and JSON data. On the wire a frame is
//!
//! ```text
//! "SP" | u32 BE body length N | N bytes: the body, a JSON object | u32 BE CRC-32 of the body
//! ```
//!
//! and the body is `{"status": S, "service_id": SID, "data_id": DID, "data": DATA}` (the
//! encoder writes this key order with compact separators; the decoder takes any order,
//! ignores unknown keys and reads a missing `data` as `null`).
//!
//! Reactions to bad input (each tested):
//!
//! * a frame that does not start with `"SP"`, declares a body over the decoder's limit, or
//!   whose checksum is right but whose body is not a message, is a [`DecodeError`]: final
//!   for the stream (close it);
//! * a frame whose checksum is wrong is skipped whole (the length keeps the stream in step)
//!   and reported as [`Item::Damaged`], with the ids the body still names if it parses, so
//!   the receiver can answer status 5 ([`status::CHECKSUM_ERROR`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::Value;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"SP";
/// Bytes before the body: the magic and the length.
pub const HEADER_LEN: usize = 6;
/// Bytes after the body: the checksum.
pub const TRAILER_LEN: usize = 4;
/// Default limit on one frame's body.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// The service ids the seed document defines.
pub mod sid {
    /// Authentication request (seed request and key).
    pub const AUTH_REQUEST: u32 = 0;
    /// Authentication response (seed and verdict).
    pub const AUTH_RESPONSE: u32 = 1;
    /// Channel name exchange request.
    pub const CHANNEL_NAME_REQUEST: u32 = 8;
    /// Channel name exchange response.
    pub const CHANNEL_NAME_RESPONSE: u32 = 9;
    /// Read data request.
    pub const READ_REQUEST: u32 = 10;
    /// Read data response.
    pub const READ_RESPONSE: u32 = 11;
    /// Write data request.
    pub const WRITE_REQUEST: u32 = 20;
    /// Write data response.
    pub const WRITE_RESPONSE: u32 = 21;
    /// Execute request.
    pub const EXECUTE_REQUEST: u32 = 30;
    /// Execute response.
    pub const EXECUTE_RESPONSE: u32 = 31;
}

/// The data ids the seed document defines.
pub mod did {
    /// On the authentication sids: the seed (requested, then sent).
    pub const AUTH_SEED: u32 = 0;
    /// On the authentication sids: the key (sent, then judged).
    pub const AUTH_KEY: u32 = 1;
    /// On the channel name sids: the name.
    pub const CHANNEL_NAME: u32 = 0;
}

/// The statuses the seed document defines (0-6).
pub mod status {
    /// Okay.
    pub const OKAY: u32 = 0;
    /// A request no callback handled: it was buffered for `receive`.
    pub const BUFFERING_UNHANDLED_REQUEST: u32 = 1;
    /// The callback failed.
    pub const CALLBACK_ERROR: u32 = 2;
    /// The connection is not trusted yet: authenticate first.
    pub const AUTH_REQUIRED: u32 = 3;
    /// Nothing is known of this service id or data id.
    pub const SERVICE_OR_DATA_UNKNOWN: u32 = 4;
    /// The frame arrived damaged.
    pub const CHECKSUM_ERROR: u32 = 5;
    /// The operation is not permitted.
    pub const OPERATION_NOT_PERMITTED: u32 = 6;

    /// The seed's name for a status (0-6).
    pub fn name(status: u32) -> Option<&'static str> {
        Some(match status {
            OKAY => "okay",
            BUFFERING_UNHANDLED_REQUEST => "request has no callback, data buffered",
            CALLBACK_ERROR => "callback error",
            AUTH_REQUIRED => "authentication required",
            SERVICE_OR_DATA_UNKNOWN => "service or data unknown",
            CHECKSUM_ERROR => "checksum error",
            OPERATION_NOT_PERMITTED => "operation not permitted",
            _ => return None,
        })
    }
}

/// The authentication states of a connection, numbered as the seed numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AuthState {
    /// 0: not (or no longer) trusted.
    Untrusted = 0,
    /// 1: the client asked for a seed.
    SeedRequested = 1,
    /// 2: the server sent a seed.
    SeedTransferred = 2,
    /// 3: the client sent its key.
    KeyTransferred = 3,
    /// 4: trusted.
    Trusted = 4,
}

impl AuthState {
    /// The seed's number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The seed's name (`AUTH_STATE__NAMES`).
    pub fn name(self) -> &'static str {
        match self {
            AuthState::Untrusted => "Untrusted Connection",
            AuthState::SeedRequested => "Seed was requested",
            AuthState::SeedTransferred => "Seed has been sent",
            AuthState::KeyTransferred => "Key has been sent",
            AuthState::Trusted => "Trusted Connection",
        }
    }

    /// The state numbered `n`.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            0 => AuthState::Untrusted,
            1 => AuthState::SeedRequested,
            2 => AuthState::SeedTransferred,
            3 => AuthState::KeyTransferred,
            4 => AuthState::Trusted,
            _ => return None,
        })
    }
}

impl std::fmt::Display for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// One message (the seed's `data_storage`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The status; requests carry [`status::OKAY`].
    pub status: u32,
    /// What kind of message this is.
    pub service_id: u32,
    /// Which request or response of that kind.
    pub data_id: u32,
    /// The data: any JSON value.
    pub data: Value,
}

impl Message {
    /// A message with status okay.
    pub fn new(service_id: u32, data_id: u32, data: Value) -> Self {
        Message {
            status: status::OKAY,
            service_id,
            data_id,
            data,
        }
    }

    /// The same message with another status.
    #[must_use]
    pub fn with_status(mut self, status: u32) -> Self {
        self.status = status;
        self
    }

    /// The body: the JSON object, keys in the order the encoder writes them.
    pub fn body(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            status: u32,
            service_id: u32,
            data_id: u32,
            data: &'a Value,
        }
        serde_json::to_vec(&Body {
            status: self.status,
            service_id: self.service_id,
            data_id: self.data_id,
            data: &self.data,
        })
        .expect("a JSON value always serializes")
    }

    /// Appends the frame to `dst`; an error if the body is longer than a u32 counts.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), BodyTooLong> {
        let body = self.body();
        let len = u32::try_from(body.len()).map_err(|_| BodyTooLong(body.len()))?;
        dst.reserve(HEADER_LEN + body.len() + TRAILER_LEN);
        dst.put_slice(&MAGIC);
        dst.put_u32(len);
        dst.put_slice(&body);
        dst.put_u32(crc32(&body));
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, BodyTooLong> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Parses a body (what is between the length and the checksum).
    pub fn from_body(body: &[u8]) -> Result<Self, Malformed> {
        let Value::Object(mut m) = serde_json::from_slice(body).map_err(|_| Malformed::NotJson)?
        else {
            return Err(Malformed::NotAnObject);
        };
        let number = |m: &serde_json::Map<String, Value>, key: &'static str| {
            m.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(Malformed::BadKey(key))
        };
        Ok(Message {
            status: number(&m, "status")?,
            service_id: number(&m, "service_id")?,
            data_id: number(&m, "data_id")?,
            data: m.remove("data").unwrap_or(Value::Null),
        })
    }
}

/// The ids of a message, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ids {
    /// Status.
    pub status: u32,
    /// Service id.
    pub service_id: u32,
    /// Data id.
    pub data_id: u32,
}

impl From<&Message> for Ids {
    fn from(m: &Message) -> Self {
        Ids {
            status: m.status,
            service_id: m.service_id,
            data_id: m.data_id,
        }
    }
}

/// What the decoder found at the front of the buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A whole, intact message.
    Message(Message),
    /// A frame whose checksum does not match its body. `ids` are what the body names if it
    /// still parses as a message (they may be damaged too), `None` if it does not.
    Damaged {
        /// The ids the damaged body names, if any.
        ids: Option<Ids>,
    },
}

/// Why a body is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not JSON.
    #[error("the body is not JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("the body is not a JSON object")]
    NotAnObject,
    /// A key missing, or not an integer from 0 to 4294967295.
    #[error("the body's {0:?} is missing or not an integer from 0 to 4294967295")]
    BadKey(&'static str),
}

/// Why a stream of frames cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame does not start with `"SP"`: not a socket_protocol peer, or out of step.
    #[error("not a socket_protocol frame: it starts with {0:02x?}, not \"SP\"")]
    BadMagic([u8; 2]),
    /// The declared body is over the limit.
    #[error("socket_protocol frame of {declared} bytes is over the limit of {max}")]
    TooLarge {
        /// Declared body length.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// The checksum is right, the body is not a message: the sender is broken.
    #[error("socket_protocol frame with a valid checksum but a malformed body: {0}")]
    Malformed(#[from] Malformed),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket_protocol body of {0} bytes is longer than a frame can declare")]
pub struct BodyTooLong(pub usize);

/// Incremental decoder; feed it a growing buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_body: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_max_body(DEFAULT_MAX_BODY)
    }
}

impl Decoder {
    /// A decoder refusing bodies over `max_body` bytes.
    pub fn with_max_body(max_body: usize) -> Self {
        Decoder { max_body }
    }

    /// The next item from the front of `buf`, if a whole frame is there. Consumes the frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, DecodeError> {
        if let Some(magic) = buf.first_chunk::<2>() {
            if *magic != MAGIC {
                return Err(DecodeError::BadMagic(*magic));
            }
        }
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if declared as u64 > self.max_body as u64 {
            return Err(DecodeError::TooLarge {
                declared: declared.into(),
                max: self.max_body,
            });
        }
        let len = declared as usize;
        let whole = HEADER_LEN + len + TRAILER_LEN;
        if buf.len() < whole {
            buf.reserve(whole - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(len);
        let sum = buf.get_u32();
        if crc32(&body) != sum {
            let ids = Message::from_body(&body).ok().map(|m| Ids::from(&m));
            return Ok(Some(Item::Damaged { ids }));
        }
        Ok(Some(Item::Message(Message::from_body(&body)?)))
    }
}

/// CRC-32 as zlib and Python's `binascii.crc32` compute it (reflected polynomial
/// 0xEDB88320, initial and final XOR 0xFFFFFFFF): `crc32(b"123456789") == 0xCBF43926`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests;
