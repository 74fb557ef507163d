//! clever-show requests served by a VSOA route table (see [`super::Node::routes`] and
//! [`crate::server::bridge`]).

use serde_json::{Map, Value};
use tether_wire::clevershow::Content;

use super::{Node, Peer};

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
    // kwargs are the param; with args, both travel.
    let param = match (args.is_empty(), kwargs.is_empty()) {
        (true, true) => None,
        (true, false) => Some(Value::Object(kwargs)),
        (false, _) => Some(serde_json::json!({ "args": args, "kwargs": kwargs })),
    };
    let local = peer.local_addr().unwrap_or_else(|| peer.addr());
    let answer = server
        .call_json(name, param.as_ref(), peer.addr(), local)
        .await?;
    Some(answer.map(Content::Json))
}
