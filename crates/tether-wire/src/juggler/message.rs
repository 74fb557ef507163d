//! User-layer messages (docs/protocols/juggler.md §2).

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// One juggler message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Client to server.
    Request {
        /// Chosen by the client, copied into the response (integers in practice).
        id: Value,
        /// The request; `None` for `""` or `null`, which servers answer with an echo.
        name: Option<String>,
        /// The argument; `None` when the field is missing (answered with a failure).
        data: Option<Value>,
    },
    /// Server to client.
    Response {
        /// The request's id.
        id: Value,
        /// The result, or on failure a readable reason.
        data: Value,
        /// Whether the request succeeded.
        success: bool,
    },
    /// Server to client: a JSON Patch for the client's copy of the state.
    State {
        /// The operations.
        diff: Value,
    },
    /// Server to client.
    Notify {
        /// What happened (Tether: the publish URL).
        name: String,
        /// Its data.
        data: Value,
    },
}

/// Why a JSON value is not a juggler message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not a JSON object.
    #[error("a juggler message must be a JSON object")]
    NotObject,
    /// `type` missing or not a string.
    #[error("a juggler message needs a string \"type\"")]
    NoType,
    /// A type this side does not take.
    #[error("unknown juggler message type {0:?}")]
    UnknownType(String),
    /// A required field is missing or of the wrong type.
    #[error("juggler {kind} without a valid {field:?}")]
    Field {
        /// The message type.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// The fields a juggler message may have; any others are ignored.
#[derive(Debug, Default)]
struct Fields {
    kind: Option<Value>,
    id: Option<Value>,
    name: Option<Value>,
    data: Option<Value>,
    success: Option<Value>,
    diff: Option<Value>,
}

impl Message {
    /// Reads a message.
    pub fn parse(value: Value) -> Result<Message, MessageError> {
        let Value::Object(mut m) = value else {
            return Err(MessageError::NotObject);
        };
        Message::from_fields(Fields {
            kind: m.remove("type"),
            id: m.remove("id"),
            name: m.remove("name"),
            data: m.remove("data"),
            success: m.remove("success"),
            diff: m.remove("diff"),
        })
    }

    fn from_fields(f: Fields) -> Result<Message, MessageError> {
        let kind = match f.kind {
            Some(Value::String(s)) => s,
            _ => return Err(MessageError::NoType),
        };
        let field = |kind, field| MessageError::Field { kind, field };
        match kind.as_str() {
            "request" => {
                let id = f.id.ok_or(field("request", "id"))?;
                let name = match f.name {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(field("request", "name")),
                };
                Ok(Message::Request {
                    id,
                    name,
                    data: f.data,
                })
            }
            "response" => Ok(Message::Response {
                id: f.id.ok_or(field("response", "id"))?,
                success: f
                    .success
                    .and_then(|v| v.as_bool())
                    .ok_or(field("response", "success"))?,
                data: f.data.unwrap_or(Value::Null),
            }),
            "state" => match f.diff {
                Some(diff @ Value::Array(_)) => Ok(Message::State { diff }),
                _ => Err(field("state", "diff")),
            },
            "notify" => match f.name {
                Some(Value::String(name)) => Ok(Message::Notify {
                    name,
                    data: f.data.unwrap_or(Value::Null),
                }),
                _ => Err(field("notify", "name")),
            },
            _ => Err(MessageError::UnknownType(kind)),
        }
    }

    /// The message as Python writes it (see [`super::to_json`]), straight from the fields:
    /// no intermediate `Value`.
    pub fn to_json(&self) -> String {
        crate::python_json::python_json_ascii(self)
    }
}

/// Keys in the order Python writes them (docs/protocols/juggler.md §2).
impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Message::Request { id, name, data } => {
                m.serialize_entry("type", "request")?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("name", name.as_deref().unwrap_or(""))?;
                m.serialize_entry("data", data.as_ref().unwrap_or(&Value::Null))?;
            }
            Message::Response { id, data, success } => {
                m.serialize_entry("type", "response")?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("data", data)?;
                m.serialize_entry("success", success)?;
            }
            Message::State { diff } => {
                m.serialize_entry("type", "state")?;
                m.serialize_entry("diff", diff)?;
            }
            Message::Notify { name, data } => {
                m.serialize_entry("type", "notify")?;
                m.serialize_entry("name", name)?;
                m.serialize_entry("data", data)?;
            }
        }
        m.end()
    }
}

/// A JSON text read as a juggler message: the message, or why that (valid) JSON is not one;
/// the same answer as [`Message::parse`] of the text's `Value`, without building that
/// `Value`: only the fields' values are kept, unknown keys are skipped, a repeated key keeps
/// its last value (as Python's `json` does). Invalid JSON is a deserialisation error.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed(pub Result<Message, MessageError>);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(ParsedVisitor)
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Type,
    Id,
    Name,
    Data,
    Success,
    Diff,
    #[serde(other)]
    Other,
}

struct ParsedVisitor;

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Type => &mut f.kind,
                Key::Id => &mut f.id,
                Key::Name => &mut f.name,
                Key::Data => &mut f.data,
                Key::Success => &mut f.success,
                Key::Diff => &mut f.diff,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(Parsed(Message::from_fields(f)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_object())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(not_object())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(not_object())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(not_object())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(not_object())
    }

    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(not_object())
    }

    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(not_object())
    }
}

fn not_object() -> Parsed {
    Parsed(Err(MessageError::NotObject))
}
