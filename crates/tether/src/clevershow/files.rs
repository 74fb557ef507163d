//! clever-show file transfer, wire-compatible with the original (docs/protocols/clever-show.md
//! §3) and confined to the node's [`FileRoot`]:
//!
//! * push: the action `filetransfer` with binary content and a `filepath` header; the
//!   receiver writes it atomically inside its root, or refuses (logged; the wire has no
//!   answer for a push);
//! * pull: the request `filetransfer` with `kwargs.filepath`, answered with a binary
//!   response, or an error response saying why not;
//! * `filestat` (Tether extension): answers `{"size": N, "sha256": "<hex>"}`, which
//!   [`Peer::push_file_verified`] uses to check a push end to end.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tether_wire::clevershow::{Content, Frame};

use super::{Node, Peer};
use crate::files::{sha256_file, sha256_file_async, write_atomically, FileRoot};
use crate::Error;

/// What `filestat` answers: a file's size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStat {
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

fn root_of(node: &Node) -> Option<FileRoot> {
    node.handlers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .files
        .clone()
}

/// The action a Tether receiver sends back for a push it refused, to a sender that said it
/// understands error responses (an original peer never gets it): kwargs `filepath`,
/// `reason`.
pub(crate) const REFUSED_ACTION: &str = "filetransfer_refused";

/// A push the peer refused, as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPush {
    /// The path the push named.
    pub filepath: String,
    /// Why the peer refused it.
    pub reason: String,
}

/// Pushes remembered per peer; older ones are dropped first.
const REFUSED_KEPT: usize = 64;

/// Writes a pushed file inside the root, or says why not: in the log, and to the sender
/// when `tell` (it said it understands error responses).
pub(crate) async fn receive_push(node: &Node, peer: &Peer, path: &str, bytes: Bytes, tell: bool) {
    let refused = |reason: String| async move {
        tracing::warn!(peer = %peer.addr(), "file push to {path:?} refused: {reason}");
        if tell {
            let mut kwargs = Map::new();
            kwargs.insert("filepath".into(), path.into());
            kwargs.insert("reason".into(), reason.into());
            if let Err(e) = peer.action(REFUSED_ACTION, Vec::new(), kwargs).await {
                tracing::debug!("cannot tell {} its push was refused: {e}", peer.addr());
            }
        }
    };
    let Some(root) = root_of(node) else {
        return refused("no files root is set".into()).await;
    };
    let requested = path.to_string();
    let len = bytes.len();
    let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let dest = root.for_write(&requested).map_err(|e| e.to_string())?;
        write_atomically(&dest, &bytes).map_err(|e| format!("{requested:?}: {e}"))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match written {
        Ok(()) => tracing::info!(peer = %peer.addr(), "received {len} bytes into {path:?}"),
        Err(e) => refused(e).await,
    }
}

/// Records a refusal the peer told us about.
pub(crate) fn refused_by_peer(peer: &Peer, frame: &Frame) {
    let (filepath, reason) = match &frame.content {
        Content::Json(v) => {
            let kw = &v["kwargs"];
            let s = |k: &str| kw[k].as_str().unwrap_or_default().to_string();
            (s("filepath"), s("reason"))
        }
        Content::Binary(_) => return,
    };
    tracing::warn!(peer = %peer.addr(), "our push to {filepath:?} was refused: {reason}");
    peer.remember_refused(RefusedPush { filepath, reason }, REFUSED_KEPT);
}

/// Answers the built-in file requests; `None` if `name` is not one of them.
pub(crate) async fn builtin_request(
    node: &Node,
    name: &str,
    kwargs: &Map<String, Value>,
) -> Option<Result<Content, String>> {
    let stat = match name {
        "filetransfer" => false,
        "filestat" => true,
        _ => return None,
    };
    let Some(root) = root_of(node) else {
        return Some(Err("no files root is set on this peer".into()));
    };
    let Some(requested) = kwargs.get("filepath").and_then(Value::as_str) else {
        return Some(Err("kwargs.filepath (a string) is required".into()));
    };
    let requested = requested.to_string();
    let limit = node.message_limit();
    let answer = tokio::task::spawn_blocking(move || -> Result<Content, String> {
        let path = root.for_read(&requested).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("{requested:?}: {e}");
        if stat {
            let (size, sha256) = sha256_file(&path).map_err(io)?;
            let stat =
                serde_json::to_value(FileStat { size, sha256 }).map_err(|e| e.to_string())?;
            return Ok(Content::Json(stat));
        }
        let size = std::fs::metadata(&path).map_err(io)?.len();
        if size > limit as u64 {
            return Err(format!(
                "{requested:?} has {size} bytes, over the clever-show limit of {limit}"
            ));
        }
        Ok(Content::Binary(Bytes::from(
            std::fs::read(&path).map_err(io)?,
        )))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    Some(answer)
}

impl Peer {
    /// Pushes the local file `local` to `remote` (a path inside the peer's files root),
    /// as the original's `send_file` does: one frame, no acknowledgement. Returns its size.
    /// A Tether receiver that refuses it says so afterwards ([`Peer::refused_pushes`], and
    /// a warning in the log); [`Peer::push_file_verified`] waits for the outcome.
    pub async fn push_file(&self, local: &Path, remote: &str) -> Result<u64, Error> {
        let what = || format!("push of {} to {remote:?}", local.display());
        let owned = local.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| {
                Error::File(crate::files::FileError {
                    what: what(),
                    reason,
                })
            })?;
        let limit = self.node().message_limit();
        if bytes.len() > limit {
            return Err(Error::File(crate::files::FileError {
                what: what(),
                reason: format!(
                    "{} bytes is over the clever-show limit of {limit} (use `tether put` over VSOA)",
                    bytes.len()
                ),
            }));
        }
        let size = bytes.len() as u64;
        // Saying we understand error responses: a Tether receiver then tells us if it
        // refuses the file ([`Peer::refused_pushes`]); an original one ignores the key.
        let frame = Frame::file_push(remote, Bytes::from(bytes)).with_extra(
            tether_wire::clevershow::ERROR_RESPONSES_KEY,
            Value::Bool(true),
        );
        self.send_frame(&frame).await?;
        Ok(size)
    }

    /// [`Peer::push_file`], then asks the peer's `filestat` (Tether peers answer it) and
    /// checks size and SHA-256 against the local file.
    pub async fn push_file_verified(&self, local: &Path, remote: &str) -> Result<FileStat, Error> {
        let (size, sha256) = sha256_file_async(local).await.map_err(|e| {
            Error::File(crate::files::FileError {
                what: local.display().to_string(),
                reason: e.to_string(),
            })
        })?;
        self.push_file(local, remote).await?;
        let mut kwargs = Map::new();
        kwargs.insert("filepath".into(), remote.into());
        let theirs: FileStat =
            serde_json::from_value(self.request("filestat").kwargs(kwargs).send().await?)?;
        let ours = FileStat { size, sha256 };
        if theirs != ours {
            return Err(Error::File(crate::files::FileError {
                what: format!("push of {} to {remote:?}", local.display()),
                reason: format!("the peer has {theirs:?}, we sent {ours:?}"),
            }));
        }
        Ok(ours)
    }

    /// Pulls `remote` (a path inside the peer's files root) into the local file `local`,
    /// written atomically. Returns its size.
    pub async fn pull_file(
        &self,
        remote: &str,
        local: &Path,
        timeout: Duration,
    ) -> Result<u64, Error> {
        let mut kwargs = Map::new();
        kwargs.insert("filepath".into(), remote.into());
        let what = format!("pull of {remote:?}");
        let content = self
            .request("filetransfer")
            .kwargs(kwargs)
            .timeout(timeout)
            .send_raw()
            .await?;
        let bytes = match content {
            Content::Binary(b) => b,
            Content::Json(v) => {
                let reason = v
                    .get("error")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("answered {v} instead of the file"));
                return Err(Error::Remote { what, reason });
            }
        };
        let dest = local.to_path_buf();
        let size = bytes.len() as u64;
        tokio::task::spawn_blocking(move || write_atomically(&dest, &bytes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| {
                Error::File(crate::files::FileError {
                    what: format!("{what} into {}", local.display()),
                    reason,
                })
            })?;
        Ok(size)
    }
}
