//! RPCs from callers on other transports (clever-show, the WebSocket gateway), which name
//! a route and carry JSON: one mapping, written once.
//!
//! A request name `/path` is a GET of that route, `SET /path` a SET. The JSON argument is
//! the param (none for `null`). Status 0 answers the reply's JSON param (null when empty);
//! any other status, or a reply with binary data or a non-JSON param (which a JSON
//! transport cannot carry), answers an error with the status and the handler's reason.

use std::net::SocketAddr;

use serde_json::Value;

use super::{Method, Server};
use crate::Payload;
use tether_wire::vsoa::Status;

/// Splits a request name into method and route URL; `None` if it names no route.
pub(crate) fn route_name(name: &str) -> Option<(Method, &str)> {
    let (method, url) = match name.strip_prefix("SET ") {
        Some(url) => (Method::Set, url),
        None => (Method::Get, name),
    };
    url.starts_with('/').then_some((method, url))
}

impl Server {
    /// Serves a JSON request named like a route (see the module docs): `None` if `name`
    /// names no route; else the reply's JSON value or a readable failure.
    pub async fn call_json(
        &self,
        name: &str,
        param: Option<&Value>,
        from: SocketAddr,
        local: SocketAddr,
    ) -> Option<Result<Value, String>> {
        let answer = self.call_json_status(name, param, from, local).await?;
        Some(answer.map_err(|(_, why)| why))
    }

    /// [`Server::call_json`], with the failure's VSOA status (`None` when the reply was
    /// fine but carried binary data).
    pub(crate) async fn call_json_status(
        &self,
        name: &str,
        param: Option<&Value>,
        from: SocketAddr,
        local: SocketAddr,
    ) -> Option<Result<Value, (Option<Status>, String)>> {
        let (method, url) = route_name(name)?;
        let param = match param {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::to_vec(v).unwrap_or_default(),
        };
        let payload = Payload {
            param: param.into(),
            data: Default::default(),
        };
        let reply = self.call_local(url, method, payload, from, local).await;
        let value = reply.payload.param_value();
        if !reply.status.is_success() {
            let reason = value
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            let why = format!("{url}: status {}: {reason}", reply.status);
            return Some(Err((Some(reply.status), why)));
        }
        if !reply.payload.data.is_empty() || (value.is_none() && !reply.payload.param.is_empty()) {
            return Some(Err((
                None,
                format!("{url} replied with binary data, which this transport cannot carry"),
            )));
        }
        Some(Ok(value.unwrap_or(Value::Null)))
    }
}
