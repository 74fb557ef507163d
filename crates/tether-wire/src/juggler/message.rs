//! User-layer messages (protocols/juggler.md §2).

use serde_json::{Map, Value};

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

impl Message {
    /// Reads a message.
    pub fn parse(value: Value) -> Result<Message, MessageError> {
        let Value::Object(mut m) = value else {
            return Err(MessageError::NotObject);
        };
        let kind = match m.remove("type") {
            Some(Value::String(s)) => s,
            _ => return Err(MessageError::NoType),
        };
        let field = |kind, field| MessageError::Field { kind, field };
        match kind.as_str() {
            "request" => {
                let id = m.remove("id").ok_or(field("request", "id"))?;
                let name = match m.remove("name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(s),
                    Some(_) => return Err(field("request", "name")),
                };
                Ok(Message::Request {
                    id,
                    name,
                    data: m.remove("data"),
                })
            }
            "response" => Ok(Message::Response {
                id: m.remove("id").ok_or(field("response", "id"))?,
                success: m
                    .remove("success")
                    .and_then(|v| v.as_bool())
                    .ok_or(field("response", "success"))?,
                data: m.remove("data").unwrap_or(Value::Null),
            }),
            "state" => match m.remove("diff") {
                Some(diff @ Value::Array(_)) => Ok(Message::State { diff }),
                _ => Err(field("state", "diff")),
            },
            "notify" => match m.remove("name") {
                Some(Value::String(name)) => Ok(Message::Notify {
                    name,
                    data: m.remove("data").unwrap_or(Value::Null),
                }),
                _ => Err(field("notify", "name")),
            },
            _ => Err(MessageError::UnknownType(kind)),
        }
    }

    /// The message as JSON, keys in the order Python writes them.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        match self {
            Message::Request { id, name, data } => {
                m.insert("type".into(), "request".into());
                m.insert("id".into(), id.clone());
                m.insert("name".into(), name.clone().unwrap_or_default().into());
                m.insert("data".into(), data.clone().unwrap_or(Value::Null));
            }
            Message::Response { id, data, success } => {
                m.insert("type".into(), "response".into());
                m.insert("id".into(), id.clone());
                m.insert("data".into(), data.clone());
                m.insert("success".into(), (*success).into());
            }
            Message::State { diff } => {
                m.insert("type".into(), "state".into());
                m.insert("diff".into(), diff.clone());
            }
            Message::Notify { name, data } => {
                m.insert("type".into(), "notify".into());
                m.insert("name".into(), name.clone().into());
                m.insert("data".into(), data.clone());
            }
        }
        Value::Object(m)
    }

    /// The message as Python writes it (see [`super::to_json`]).
    pub fn to_json(&self) -> String {
        super::to_json(&self.to_value())
    }
}
