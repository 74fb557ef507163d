//! The JSON lines `call`, `sub` and `sp` print. Field order is part of the contract.

use std::io::Write;

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;

#[derive(Serialize)]
struct ReplyLine {
    status: u8,
    param: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    param_base64: Option<String>,
    data: Option<String>,
    tunid: u16,
}

#[derive(Serialize)]
struct MessageLine<'a> {
    url: &'a str,
    param: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    param_base64: Option<String>,
    data: Option<String>,
    quick: bool,
}

fn b64(bytes: &Bytes) -> Option<String> {
    (!bytes.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A param as JSON, or null plus its base64 when it is not valid JSON.
fn param_fields(param: &Bytes) -> (serde_json::Value, Option<String>) {
    if param.is_empty() {
        return (serde_json::Value::Null, None);
    }
    match serde_json::from_slice(param) {
        Ok(v) => (v, None),
        Err(_) => (serde_json::Value::Null, b64(param)),
    }
}

pub(crate) fn reply_json(reply: &tether::Response) -> String {
    let (param, param_base64) = param_fields(&reply.payload.param);
    let line = ReplyLine {
        status: reply.status.0,
        param,
        param_base64,
        data: b64(&reply.payload.data),
        tunid: reply.tunid,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

pub(crate) fn message_json(msg: &tether::Message) -> String {
    let (param, param_base64) = param_fields(&msg.payload.param);
    let line = MessageLine {
        url: &msg.url,
        param,
        param_base64,
        data: b64(&msg.payload.data),
        quick: msg.quick,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// A socket_protocol message: `{"status":N,"service_id":N,"data_id":N,"data":...}`.
pub(crate) fn sp_message_json(m: &tether::sp::Message) -> String {
    serde_json::json!({
        "status": m.status,
        "service_id": m.service_id,
        "data_id": m.data_id,
        "data": m.data,
    })
    .to_string()
}

/// Prints one line and flushes, so a reader on a pipe sees it at once.
pub(crate) fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
