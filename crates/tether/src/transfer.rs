//! File transfer over VSOA streams, with a SHA-256 check and resume (a Tether service; any
//! VSOA client can drive it, the protocol is in docs/protocol-extensions.md):
//!
//! * **download**: GET `<prefix>NAME`, param `{"offset": N, "sha256": "<hex>"?}`. The reply
//!   param is `{"size", "sha256", "offset"}` and a stream that sends the file from `offset`
//!   to its end. `offset` is the one asked for, or 0 when the asker's `sha256` (the content
//!   its partial copy belongs to) is not the file's any more.
//! * **upload**: SET `<prefix>NAME`, param `{"size": N, "sha256": "<hex>"}`. The reply
//!   param `{"offset": N}` says how much of this very content (same name, same SHA-256) the
//!   server already has from an earlier broken upload; the client sends the rest on the
//!   stream and closes its sending side. The server checks size and SHA-256, moves the file
//!   into place atomically, and answers one JSON line on the stream:
//!   `{"ok": true, "size", "sha256"}` or `{"ok": false, "error"}`. A short upload is kept
//!   for a later resume; a wrong one is thrown away.
//!
//! Names are paths inside the service's [`FileRoot`]; partial uploads live in its
//! `.tether-parts` folder, which no name can reach. One upload per name at a time: an
//! upload of a name that is being uploaded waits for the earlier one to end (up to
//! [`TAKEOVER_WAIT`]); if that one received nothing meanwhile (its client died without the
//! server noticing, or is stuck), the new one takes it over and resumes from its part;
//! one still receiving, or one of other content, is refused as in progress.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::files::{sha256_file_async, FileRoot, PathError, PARTS_DIR};
use crate::{Client, DataStream, Error, Method, Reply, Request, Server, Status};

/// Default largest file the service accepts or sends.
pub const DEFAULT_MAX_FILE: u64 = 4 << 30;
/// Copy buffer size.
const CHUNK: usize = 256 * 1024;

/// How long an upload waits for an earlier upload of the same name to end, and, if that
/// one received nothing meanwhile, for it to stop once told to.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// The reply to a download request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The whole file's size.
    pub size: u64,
    /// The whole file's SHA-256, lowercase hex.
    pub sha256: String,
    /// Where the stream starts.
    pub offset: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadArgs {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadArgs {
    size: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct UploadStart {
    offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The server side: serves a [`FileRoot`] under a URL prefix.
#[derive(Debug, Clone)]
pub struct FileService {
    root: FileRoot,
    max_size: u64,
    busy: Arc<Mutex<HashMap<String, Upload>>>,
}

/// An upload in progress, as other uploads of its name see it.
#[derive(Debug, Clone)]
struct Upload {
    sha256: String,
    /// Bytes received so far (a stuck upload's count does not move).
    received: Arc<AtomicU64>,
    /// Tells it to stop (it keeps its part).
    stop: Arc<Notify>,
    /// Held while it runs.
    lease: Arc<tokio::sync::Mutex<()>>,
}

/// Holds a name as "upload in progress" until dropped.
struct Busy {
    name: String,
    set: Arc<Mutex<HashMap<String, Upload>>>,
    me: Upload,
    _lease: OwnedMutexGuard<()>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if set
            .get(&self.name)
            .is_some_and(|u| Arc::ptr_eq(&u.stop, &self.me.stop))
        {
            set.remove(&self.name);
        }
    }
}

impl FileService {
    /// Claims `name` for an upload of `sha256` (see the module docs): waits for, or takes
    /// over, an earlier upload of the same content; refuses one of other content or one
    /// still receiving.
    async fn claim(&self, name: &str, sha256: &str) -> Result<Busy, String> {
        let lease = Arc::new(tokio::sync::Mutex::new(()));
        let me = Upload {
            sha256: sha256.to_string(),
            received: Arc::default(),
            stop: Arc::default(),
            lease: lease.clone(),
        };
        let guard = lease.try_lock_owned().map_err(|e| e.to_string())?;
        let in_progress = || format!("an upload of {name:?} is in progress");
        let busy = |me: Upload, guard| Busy {
            name: name.to_string(),
            set: self.busy.clone(),
            me,
            _lease: guard,
        };
        let earlier = {
            let mut set = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            match set.get(name) {
                Some(u) if u.sha256 != sha256 => {
                    return Err(format!("{} (of other content)", in_progress()))
                }
                Some(u) => u.clone(),
                None => {
                    set.insert(name.to_string(), me.clone());
                    return Ok(busy(me, guard));
                }
            }
        };
        let before = earlier.received.load(Ordering::Relaxed);
        let ended = tokio::time::timeout(TAKEOVER_WAIT, earlier.lease.clone().lock_owned()).await;
        if ended.is_err() {
            if earlier.received.load(Ordering::Relaxed) != before {
                return Err(format!("{} and receiving", in_progress()));
            }
            tracing::info!("upload of {name:?}: the earlier one received nothing for {TAKEOVER_WAIT:?}; taking it over");
            earlier.stop.notify_one();
            let stopped =
                tokio::time::timeout(TAKEOVER_WAIT, earlier.lease.clone().lock_owned()).await;
            if stopped.is_err() {
                return Err(format!(
                    "{} and did not stop when taken over",
                    in_progress()
                ));
            }
        }
        let mut set = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        match set.get(name) {
            Some(u) if !Arc::ptr_eq(&u.stop, &earlier.stop) => Err(in_progress()),
            _ => {
                set.insert(name.to_string(), me.clone());
                Ok(busy(me, guard))
            }
        }
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn refusal(e: &PathError) -> Reply {
    match e {
        PathError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Reply::error(Status::INVALID_URL, e.to_string())
        }
        PathError::Io { .. } => Reply::error(Status::ARGUMENTS, e.to_string()),
        PathError::Refused { .. } | PathError::Escapes { .. } => {
            Reply::error(Status::NO_PERMISSIONS, e.to_string())
        }
    }
}

impl FileService {
    /// Serves `root`, files up to [`DEFAULT_MAX_FILE`] bytes.
    pub fn new(root: FileRoot) -> Self {
        FileService {
            root,
            max_size: DEFAULT_MAX_FILE,
            busy: Arc::default(),
        }
    }

    /// The largest file accepted or sent.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Registers the service for every URL under `prefix` (which must end in `/`, e.g.
    /// `/files/`): GET downloads, SET uploads.
    pub fn install(self, server: &Server, prefix: &str) {
        let prefix = prefix.to_string();
        let service = Arc::new(self);
        server.route(&prefix.clone(), move |req: Request| {
            let service = service.clone();
            let name = req.url().strip_prefix(prefix.as_str()).map(String::from);
            async move {
                let Some(name) = name else {
                    return Reply::error(Status::INVALID_URL, "no file name in the URL");
                };
                match req.method {
                    Method::Get => service.download(&req, &name).await,
                    Method::Set => service.upload(&req, &name).await,
                }
            }
        });
    }

    async fn download(&self, req: &Request, name: &str) -> Reply {
        let args: DownloadArgs = if req.payload.param.is_empty() {
            DownloadArgs::default()
        } else {
            match req.payload.param_json() {
                Ok(a) => a,
                Err(e) => {
                    return Reply::error(
                        Status::ARGUMENTS,
                        format!("param must be {{\"offset\": N, \"sha256\": \"<hex>\"}}: {e}"),
                    )
                }
            }
        };
        let path = match self.root.for_read(name) {
            Ok(p) => p,
            Err(e) => return refusal(&e),
        };
        let (size, sha256) = match sha256_file_async(&path).await {
            Ok(h) => h,
            Err(e) => return Reply::error(Status::ARGUMENTS, format!("{name:?}: {e}")),
        };
        if size > self.max_size {
            return Reply::error(
                Status::ARGUMENTS,
                format!(
                    "{name:?} has {size} bytes, over the limit of {}",
                    self.max_size
                ),
            );
        }
        let offset = match &args.sha256 {
            Some(theirs) if *theirs != sha256 => 0,
            _ => args.offset,
        };
        if offset > size {
            return Reply::error(
                Status::ARGUMENTS,
                format!("offset {offset} is past the end of {name:?} ({size} bytes)"),
            );
        }
        let offer = Offer {
            size,
            sha256,
            offset,
        };
        let reply = match Reply::json(&offer) {
            Ok(r) => r,
            Err(e) => return Reply::error(Status::NO_MEMORY, e.to_string()),
        };
        let name = name.to_string();
        req.with_stream(reply, move |mut stream| async move {
            let sent = async {
                let mut file = tokio::fs::File::open(&path).await?;
                file.seek(SeekFrom::Start(offset)).await?;
                let n = tokio::io::copy(&mut file.take(size - offset), &mut stream).await?;
                stream.shutdown().await?;
                Ok::<u64, std::io::Error>(n)
            };
            match sent.await {
                Ok(n) => tracing::info!("sent {n} bytes of {name:?} from offset {offset}"),
                Err(e) => tracing::info!("download of {name:?} broke off: {e}"),
            }
        })
        .await
    }

    fn part_path(&self, name: &str, sha256: &str) -> PathBuf {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(sha256.as_bytes());
        let key = crate::auth::to_hex(&h.finalize());
        self.root.path().join(PARTS_DIR).join(format!("{key}.part"))
    }

    // Long on purpose: the steps of one upload in order (offer, resume point, copy, checksum,
    // atomic rename); split, they would pass most of their state around.
    async fn upload(&self, req: &Request, name: &str) -> Reply {
        let args: UploadArgs = match req.payload.param_json() {
            Ok(a) => a,
            Err(e) => {
                return Reply::error(
                    Status::ARGUMENTS,
                    format!("param must be {{\"size\": N, \"sha256\": \"<64 hex digits>\"}}: {e}"),
                )
            }
        };
        if !is_sha256(&args.sha256) {
            return Reply::error(Status::ARGUMENTS, "sha256 must be 64 lowercase hex digits");
        }
        if args.size > self.max_size {
            return Reply::error(
                Status::ARGUMENTS,
                format!(
                    "{} bytes is over the limit of {} bytes",
                    args.size, self.max_size
                ),
            );
        }
        let dest = match self.root.for_write(name) {
            Ok(p) => p,
            Err(e) => return refusal(&e),
        };
        let busy = match self.claim(name, &args.sha256).await {
            Ok(b) => b,
            Err(why) => return Reply::error(Status::ARGUMENTS, why),
        };
        let part = self.part_path(name, &args.sha256);
        let prepared = async {
            tokio::fs::create_dir_all(part.parent().unwrap_or(self.root.path())).await?;
            let have = match tokio::fs::metadata(&part).await {
                Ok(m) if m.len() <= args.size => m.len(),
                Ok(_) => {
                    tokio::fs::remove_file(&part).await?;
                    0
                }
                Err(_) => 0,
            };
            Ok::<u64, std::io::Error>(have)
        };
        let offset = match prepared.await {
            Ok(o) => o,
            Err(e) => return Reply::error(Status::NO_MEMORY, format!("{name:?}: {e}")),
        };
        let reply = match Reply::json(&UploadStart { offset }) {
            Ok(r) => r,
            Err(e) => return Reply::error(Status::NO_MEMORY, e.to_string()),
        };
        let name = name.to_string();
        req.with_stream(reply, move |mut stream| async move {
            let outcome = receive(&mut stream, &part, &dest, offset, &args, &busy.me).await;
            drop(busy);
            match &outcome {
                Ok(()) => tracing::info!("received {name:?}: {} bytes", args.size),
                Err(e) => tracing::info!("upload of {name:?}: {e}"),
            }
            let line = match outcome {
                Ok(()) => Outcome {
                    ok: true,
                    size: Some(args.size),
                    sha256: Some(args.sha256),
                    error: None,
                },
                Err(e) => Outcome {
                    ok: false,
                    size: None,
                    sha256: None,
                    error: Some(e),
                },
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        })
        .await
    }
}

/// Appends the rest of an upload to `part`, then checks it and moves it to `dest`.
async fn receive(
    stream: &mut DataStream,
    part: &Path,
    dest: &Path,
    offset: u64,
    args: &UploadArgs,
    me: &Upload,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(io)?;
    // One byte more than expected shows a sender that sends too much.
    let want = args.size - offset;
    let copied = copy_until_stopped(stream, &mut file, want + 1, me).await;
    file.sync_all().await.map_err(io)?;
    drop(file);
    let got = match copied {
        Ok(Some(got)) => got,
        Ok(None) => {
            return Err(
                "taken over by a newer upload of the same file, which resumes from the part".into(),
            )
        }
        Err(e) => {
            return Err(format!(
                "stream broke off: {e}; the part is kept for a resume"
            ))
        }
    };
    if got > want {
        let _ = tokio::fs::remove_file(part).await;
        return Err(format!("more than the announced {} bytes", args.size));
    }
    if got < want {
        return Err(format!(
            "stream ended after {} of {} bytes; the part is kept for a resume",
            offset + got,
            args.size
        ));
    }
    let (size, sha256) = sha256_file_async(part).await.map_err(io)?;
    if size != args.size || sha256 != args.sha256 {
        let _ = tokio::fs::remove_file(part).await;
        return Err(format!(
            "the received file has SHA-256 {sha256}, not the announced {}; discarded",
            args.sha256
        ));
    }
    tokio::fs::rename(part, dest).await.map_err(io)
}

/// Copies up to `limit` bytes from `stream` to `file`, counting them in `me.received`;
/// `None` if told to stop first.
async fn copy_until_stopped(
    stream: &mut DataStream,
    file: &mut tokio::fs::File,
    limit: u64,
    me: &Upload,
) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < limit {
        let room = buf
            .len()
            .min(usize::try_from(limit - got).unwrap_or(usize::MAX));
        let n = tokio::select! {
            n = stream.read(&mut buf[..room]) => n?,
            () = me.stop.notified() => return Ok(None),
        };
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).await?;
        got += n as u64;
        me.received.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(Some(got))
}

/// What a finished transfer moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// The file's size.
    pub size: u64,
    /// Its SHA-256, checked on both sides.
    pub sha256: String,
    /// Bytes that were already there from an earlier, broken transfer.
    pub resumed_from: u64,
}

fn refused(what: &str, status: Status, payload: &crate::Payload) -> Error {
    let reason = payload
        .param_value()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| "no reason given".into());
    Error::Remote {
        what: what.to_string(),
        reason: format!("status {status}: {reason}"),
    }
}

fn file_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| {
        Error::File(crate::files::FileError {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }
}

/// A transfer whose connection broke: [`Error::Closed`], which a caller may retry (the next
/// attempt resumes).
fn broke_off(what: &str, e: std::io::Error) -> Error {
    Error::Closed {
        reason: crate::CloseReason::Failed(
            format!("{what} broke off: {e}; run again to resume").into(),
        ),
    }
}

/// Copies `from` to `to`, reporting the running total (starting at `done`) to `progress`.
async fn copy_counting<R, W>(
    from: &mut R,
    to: &mut W,
    mut done: u64,
    progress: &mut (dyn FnMut(u64) + Send),
) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(done);
        }
        to.write_all(&buf[..n]).await?;
        done += n as u64;
        progress(done);
    }
}

/// Uploads `local` to `url` (a path under a [`FileService`] prefix) over `client`, resuming
/// where an earlier broken upload of the same content stopped. `progress` gets
/// `(bytes done, total)`.
pub async fn put(
    client: &Client,
    url: &str,
    local: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Transferred, Error> {
    let what = format!("upload of {} to {url}", local.display());
    let (size, sha256) = sha256_file_async(local).await.map_err(file_error(&what))?;
    let resp = client
        .call(url)
        .set()
        .json(&serde_json::json!({ "size": size, "sha256": sha256 }))?
        .send()
        .await?;
    if !resp.status.is_success() {
        return Err(refused(&what, resp.status, &resp.payload));
    }
    let start: UploadStart = resp.payload.param_json()?;
    if start.offset > size || resp.tunid == 0 {
        return Err(Error::Malformed {
            addr: client.server_addr(),
            detail: format!("upload reply {start:?} with stream {}", resp.tunid),
        });
    }
    let mut stream = client.connect_stream(resp.tunid).await?;
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(file_error(&what))?;
    file.seek(SeekFrom::Start(start.offset))
        .await
        .map_err(file_error(&what))?;
    progress(start.offset, size);
    let mut report = |done| progress(done, size);
    let broke = |e: std::io::Error| broke_off(&what, e);
    copy_counting(&mut file, &mut stream, start.offset, &mut report)
        .await
        .map_err(broke)?;
    stream.shutdown().await.map_err(broke)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(4096)
        .read_to_end(&mut answer)
        .await
        .map_err(broke)?;
    let outcome: Outcome = serde_json::from_slice(&answer).map_err(|e| Error::Malformed {
        addr: client.server_addr(),
        detail: format!("upload outcome {:?}: {e}", String::from_utf8_lossy(&answer)),
    })?;
    if !outcome.ok {
        return Err(Error::Remote {
            what,
            reason: outcome.error.unwrap_or_else(|| "no reason given".into()),
        });
    }
    Ok(Transferred {
        size,
        sha256,
        resumed_from: start.offset,
    })
}

/// The partial file a download into `local` keeps, and the file naming its content.
pub fn part_paths(local: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut s = local.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    (with(".tether-part"), with(".tether-part.sha256"))
}

/// Downloads `url` (a path under a [`FileService`] prefix) into `local`, resuming from a
/// partial copy an earlier broken download left beside it (see [`part_paths`]) when it
/// belongs to the same content; the SHA-256 of the whole file is checked before `local`
/// is replaced. `progress` gets `(bytes done, total)`.
// Long on purpose: the steps of one download in order, as in `upload`.
pub async fn get(
    client: &Client,
    url: &str,
    local: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Transferred, Error> {
    let what = format!("download of {url} into {}", local.display());
    let io = file_error(&what);
    let (part, sidecar) = part_paths(local);
    let known = tokio::fs::read_to_string(&sidecar).await.ok();
    let have = match (&known, tokio::fs::metadata(&part).await) {
        (Some(_), Ok(m)) => m.len(),
        _ => 0,
    };
    let mut args = serde_json::json!({ "offset": have });
    if let Some(sha) = &known {
        args["sha256"] = sha.trim().into();
    }
    let resp = client.call(url).get().json(&args)?.send().await?;
    if !resp.status.is_success() {
        return Err(refused(&what, resp.status, &resp.payload));
    }
    let offer: Offer = resp.payload.param_json()?;
    if offer.offset > offer.size || offer.offset > have || resp.tunid == 0 {
        return Err(Error::Malformed {
            addr: client.server_addr(),
            detail: format!("download offer {offer:?} with stream {}", resp.tunid),
        });
    }
    let mut stream = client.connect_stream(resp.tunid).await?;
    tokio::fs::write(&sidecar, &offer.sha256)
        .await
        .map_err(&io)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part)
        .await
        .map_err(&io)?;
    file.set_len(offer.offset).await.map_err(&io)?;
    file.seek(SeekFrom::Start(offer.offset))
        .await
        .map_err(&io)?;
    progress(offer.offset, offer.size);
    let mut report = |done| progress(done, offer.size);
    let copied = copy_counting(&mut stream, &mut file, offer.offset, &mut report).await;
    file.sync_all().await.map_err(&io)?;
    drop(file);
    let done = copied.map_err(|e| broke_off(&what, e))?;
    if done != offer.size {
        return Err(Error::Closed {
            reason: crate::CloseReason::Failed(
                format!(
                    "{what}: the stream ended after {done} of {} bytes; run again to resume",
                    offer.size
                )
                .into(),
            ),
        });
    }
    let (size, sha256) = sha256_file_async(&part).await.map_err(&io)?;
    if size != offer.size || sha256 != offer.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        let _ = tokio::fs::remove_file(&sidecar).await;
        return Err(Error::File(crate::files::FileError {
            what: what.clone(),
            reason: format!(
                "received SHA-256 {sha256}, the server announced {}; discarded",
                offer.sha256
            ),
        }));
    }
    tokio::fs::rename(&part, local).await.map_err(&io)?;
    let _ = tokio::fs::remove_file(&sidecar).await;
    Ok(Transferred {
        size,
        sha256,
        resumed_from: offer.offset,
    })
}
