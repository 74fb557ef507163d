//! The clever-show `messaging` framing (docs/protocols/clever-show.md, §2-§3).
//!
//! A frame is a u16 big-endian header length, a JSON header, and `content-length` bytes of
//! content: JSON when `content-type` is `"json"`, raw bytes otherwise. The decoder accepts
//! any key order and whitespace (Python 2 drones send hash order) and keeps extra header
//! keys; the encoder writes Python 3's key order and `", "` / `": "` separators with raw
//! UTF-8, so the captured vectors are reproduced byte for byte.
//!
//! Reactions to bad input (each tested): a header that is not a JSON object, lacks one of
//! the five keys, or has a `content-length` that is not a non-negative integer is an error;
//! a content longer than the decoder's limit is refused before it is buffered; JSON content
//! that does not parse is an error. All errors are final for the stream (close it). Content
//! `null` decodes as JSON null (the original would desync on it).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

/// The five header keys every frame must carry, in the order Python 3 writes them.
pub const REQUIRED_KEYS: [&str; 5] = [
    "byteorder",
    "content-type",
    "content-encoding",
    "content-length",
    "message-type",
];

/// The header key with which a request says its sender understands error responses
/// (docs/protocol-extensions.md): Tether sends them only to requests that carry it as
/// `true`, because an original peer writes whatever response comes into its target file.
pub const ERROR_RESPONSES_KEY: &str = "error-responses";

/// Default limit on one frame's content (the original has none).
pub const DEFAULT_MAX_CONTENT: usize = 64 << 20;

/// A frame's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `content-type: "json"`.
    Json(Value),
    /// Any other content type: raw bytes (file transfer).
    Binary(Bytes),
}

/// One clever-show message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `message-type`: `"message"` (actions and file pushes), `"request"`, `"response"`, or
    /// anything else (which receivers ignore).
    pub message_type: String,
    /// Header keys beyond the five required ones, in order (`action`, `filepath`,
    /// `requested_value`, `request_id`, or whatever a peer added).
    pub extra: Map<String, Value>,
    /// The content.
    pub content: Content,
    /// The sender's `byteorder` (informational; we send `"little"`).
    pub byteorder: String,
}

/// Why a stream of frames cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header is not a JSON object.
    #[error("clever-show header is not a JSON object")]
    HeaderNotJson,
    /// A required key is missing or has the wrong type.
    #[error("clever-show header lacks a valid {0:?}")]
    MissingKey(&'static str),
    /// `content-length` is over the limit.
    #[error("clever-show content of {declared} bytes is over the limit of {max}")]
    TooLarge {
        /// Declared length.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// JSON content that does not parse.
    #[error("clever-show content declared as JSON does not parse")]
    ContentNotJson,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clever-show header of {0} bytes is longer than the 65535 the framing allows")]
pub struct HeaderTooLong(pub usize);

pub use crate::python_json::python_json;

impl Frame {
    fn new(message_type: &str, extra: Map<String, Value>, content: Content) -> Self {
        Frame {
            message_type: message_type.into(),
            extra,
            content,
            byteorder: "little".into(),
        }
    }

    fn args_kwargs(args: Vec<Value>, kwargs: Map<String, Value>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("args".into(), Value::Array(args));
        m.insert("kwargs".into(), Value::Object(kwargs));
        m
    }

    /// An action: `action` in the header, `{"args": [...], "kwargs": {...}}` as content.
    pub fn action(name: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        let mut extra = Map::new();
        extra.insert("action".into(), name.into());
        Frame::new(
            "message",
            extra,
            Content::Json(Value::Object(Self::args_kwargs(args, kwargs))),
        )
    }

    /// A request; the ids travel in the content.
    pub fn request(
        requested_value: &str,
        request_id: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Self {
        let mut content = Map::new();
        content.insert("requested_value".into(), requested_value.into());
        content.insert("request_id".into(), request_id.into());
        content.extend(Self::args_kwargs(args, kwargs));
        Frame::new("request", Map::new(), Content::Json(Value::Object(content)))
    }

    /// The same frame with `key: value` added to its header.
    #[must_use]
    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// Whether a request's sender said it understands error responses
    /// ([`ERROR_RESPONSES_KEY`]).
    pub fn accepts_error_responses(&self) -> bool {
        self.extra.get(ERROR_RESPONSES_KEY) == Some(&Value::Bool(true))
    }

    /// A response; the ids travel in the header. `Content::Json(v)` is sent as `{"value": v}`.
    pub fn response(requested_value: &str, request_id: &str, content: Content) -> Self {
        let mut extra = Map::new();
        extra.insert("requested_value".into(), requested_value.into());
        extra.insert("request_id".into(), request_id.into());
        let content = match content {
            Content::Json(v) => {
                let mut m = Map::new();
                m.insert("value".into(), v);
                Content::Json(Value::Object(m))
            }
            binary => binary,
        };
        Frame::new("response", extra, content)
    }

    /// A response reporting a failure, with content `{"value": null, "error": reason}` (a
    /// Tether extension, only for requests that [accept it](Frame::accepts_error_responses):
    /// the original sends nothing, and writes any response to a file pull into its file).
    pub fn error_response(requested_value: &str, request_id: &str, reason: &str) -> Self {
        let mut frame = Self::response(requested_value, request_id, Content::Json(Value::Null));
        if let Content::Json(Value::Object(m)) = &mut frame.content {
            m.insert("error".into(), reason.into());
        }
        frame
    }

    /// A file push: the whole file as binary content, its destination in `filepath`.
    pub fn file_push(filepath: &str, bytes: Bytes) -> Self {
        let mut extra = Map::new();
        extra.insert("action".into(), "filetransfer".into());
        extra.insert("filepath".into(), filepath.into());
        Frame::new("message", extra, Content::Binary(bytes))
    }

    /// A header field beyond the five required ones, as a string.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }

    /// Appends the frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), HeaderTooLong> {
        let (content_type, body): (&str, std::borrow::Cow<'_, [u8]>) = match &self.content {
            Content::Json(v) => ("json", python_json(v).into()),
            Content::Binary(b) => ("binary", b.as_ref().into()),
        };
        let mut header = Map::new();
        header.insert("byteorder".into(), self.byteorder.clone().into());
        header.insert("content-type".into(), content_type.into());
        header.insert("content-encoding".into(), "utf-8".into());
        header.insert("content-length".into(), body.len().into());
        header.insert("message-type".into(), self.message_type.clone().into());
        for (k, v) in &self.extra {
            header.insert(k.clone(), v.clone());
        }
        let header = python_json(&Value::Object(header));
        let len = u16::try_from(header.len()).map_err(|_| HeaderTooLong(header.len()))?;
        dst.reserve(2 + header.len() + body.len());
        dst.put_u16(len);
        dst.put_slice(&header);
        dst.put_slice(&body);
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, HeaderTooLong> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}

/// Incremental decoder; feed it a growing buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_content: usize,
    /// Parsed header of a frame whose content has not fully arrived.
    pending: Option<(Map<String, Value>, usize)>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_max_content(DEFAULT_MAX_CONTENT)
    }
}

impl Decoder {
    /// A decoder refusing contents over `max_content` bytes.
    pub fn with_max_content(max_content: usize) -> Self {
        Decoder {
            max_content,
            pending: None,
        }
    }

    /// The next frame from the front of `buf`, if it is complete.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if self.pending.is_none() {
            let Some(len) = buf
                .first_chunk::<2>()
                .map(|b| u16::from_be_bytes(*b) as usize)
            else {
                return Ok(None);
            };
            if buf.len() < 2 + len {
                return Ok(None);
            }
            let header: Map<String, Value> =
                serde_json::from_slice(&buf[2..2 + len]).map_err(|_| DecodeError::HeaderNotJson)?;
            for key in REQUIRED_KEYS {
                let ok = match key {
                    "content-length" => header.get(key).is_some_and(Value::is_u64),
                    _ => header.get(key).is_some_and(Value::is_string),
                };
                if !ok {
                    return Err(DecodeError::MissingKey(key));
                }
            }
            let declared = header["content-length"].as_u64().unwrap_or(u64::MAX);
            if declared > self.max_content as u64 {
                return Err(DecodeError::TooLarge {
                    declared,
                    max: self.max_content,
                });
            }
            buf.advance(2 + len);
            self.pending = Some((header, declared as usize));
        }
        let Some((_, content_len)) = &self.pending else {
            return Ok(None);
        };
        if buf.len() < *content_len {
            buf.reserve(*content_len - buf.len());
            return Ok(None);
        }
        let Some((mut header, content_len)) = self.pending.take() else {
            return Ok(None);
        };
        let content = buf.split_to(content_len).freeze();
        let text = |k: &str| {
            header
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let content = if text("content-type") == "json" {
            Content::Json(
                serde_json::from_slice(&content).map_err(|_| DecodeError::ContentNotJson)?,
            )
        } else {
            Content::Binary(content)
        };
        let message_type = text("message-type");
        let byteorder = text("byteorder");
        for key in REQUIRED_KEYS {
            header.shift_remove(key);
        }
        Ok(Some(Frame {
            message_type,
            extra: header,
            content,
            byteorder,
        }))
    }
}

#[cfg(test)]
mod tests;
