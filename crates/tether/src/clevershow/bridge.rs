//! clever-show requests served by a VSOA route table (see [`super::Node::routes`]).

use serde_json::{Map, Value};
use tether_wire::clevershow::Content;

use super::{Node, Peer};
use crate::{Method, Payload};

/// Answers a request named like a URL through the node's server, if it has one.
pub(crate) async fn route(
    node: &Node,
    peer: &Peer,
    name: &str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
) -> Option<Result<Content, String>> {
    let server = node
        .handlers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .routes
        .clone()?;
    let (method, url) = match name.strip_prefix("SET ") {
        Some(url) => (Method::Set, url),
        None => (Method::Get, name),
    };
    if !url.starts_with('/') {
        return None;
    }
    let param = match (args.is_empty(), kwargs.is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => serde_json::to_vec(&kwargs).unwrap_or_default(),
        (false, _) => serde_json::to_vec(&serde_json::json!({ "args": args, "kwargs": kwargs }))
            .unwrap_or_default(),
    };
    let payload = Payload {
        param: param.into(),
        data: Default::default(),
    };
    let local = peer.local_addr().unwrap_or_else(|| peer.addr());
    let reply = server
        .call_local(url, method, payload, peer.addr(), local)
        .await;
    let param = reply.payload.param_value();
    if !reply.status.is_success() {
        let reason = param
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Some(Err(format!("{url}: status {}: {reason}", reply.status)));
    }
    if !reply.payload.data.is_empty() || (param.is_none() && !reply.payload.param.is_empty()) {
        return Some(Err(format!(
            "{url} replied with binary data, which a clever-show response cannot carry"
        )));
    }
    Some(Ok(Content::Json(param.unwrap_or(Value::Null))))
}
