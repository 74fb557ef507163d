//! The outbound side of one connection: a byte-bounded queue and the task that drains it.
//!
//! Every packet a connection sends (replies, publishes, datagrams) is encoded once by its
//! producer and queued here as `Bytes`. A single writer task owns the socket's write half,
//! takes whatever is queued and writes it with one vectored write, so a burst of small
//! packets costs one syscall.
//!
//! Backpressure is explicit (docs/architecture.md, "Backpressure"): the queue holds at most `limit` bytes. A
//! producer that finds it full waits up to the send timeout for room; the writer gives a
//! socket that accepts no bytes for the send timeout the same deadline. Either way the
//! connection is then *killed* with a logged reason, which wakes the connection's reader
//! and every waiting producer at once. Nothing is dropped without the peer losing its
//! connection, and a slow peer costs the others at most one send timeout.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore, TryAcquireError};

use crate::CloseReason;

/// Most packets gathered into one vectored write.
const MAX_BATCH: usize = 64;
/// Most bytes gathered into one vectored write.
const MAX_BATCH_BYTES: usize = 256 * 1024;

enum Frame {
    /// Bytes, the budget permits they hold, and whether they are a publish (counted until
    /// written, so a cut-off can say how many it threw away).
    Data(Bytes, u32, bool),
    /// Like `Data`, but written in a write of its own (the handshake reply: Python clients
    /// read it with one recv and drop whatever else that recv returns).
    Alone(Bytes, u32),
    /// Flush what is queued, then shut the write half down.
    Close,
}

/// Why a send did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or being closed.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The queue stayed full for the whole send timeout: this send cut the connection off
    /// (with [`CloseReason::SlowConsumer`]).
    #[error("{}", CloseReason::SlowConsumer { timeout: *.0 })]
    CutOff(Duration),
}

impl SendError {
    /// Why the connection is (now) closed.
    pub(crate) fn reason(self) -> CloseReason {
        match self {
            SendError::Closed(reason) => reason,
            SendError::CutOff(timeout) => CloseReason::SlowConsumer { timeout },
        }
    }
}

/// What the producers of one queue and its writer share.
struct QueueState {
    tx: mpsc::UnboundedSender<Frame>,
    budget: Semaphore,
    limit: u32,
    /// In nanoseconds: changeable while the connection lives.
    send_timeout: AtomicU64,
    killed: watch::Sender<Option<CloseReason>>,
    /// The server's traffic counters, which count a cut-off when it happens.
    counters: OnceLock<Arc<crate::server::traffic::Counters>>,
    /// Publishes queued and not yet written.
    publishes_queued: AtomicUsize,
    /// Whether a publish report has counted this connection's cut-off.
    cut_reported: AtomicBool,
}

/// Producer handle of a connection's outbound queue. Cloning is one `Arc` increment.
#[derive(Clone)]
pub(crate) struct Outbound {
    shared: Arc<QueueState>,
}

/// The writer task's end of the queue.
pub(crate) struct OutboundRx {
    rx: mpsc::UnboundedReceiver<Frame>,
    outbound: Outbound,
    keep_unsent: bool,
    /// Close without the orderly shutdown (SO_LINGER 0: the socket resets).
    abortive: bool,
    counters: Option<Arc<crate::server::traffic::Counters>>,
}

/// What the writer holds between writes.
#[derive(Default)]
struct Batch {
    /// The buffers of the write in progress; a fully written one is emptied.
    bufs: Vec<Bytes>,
    /// The same buffers whole, kept only when the unsent ones are to be given back.
    originals: Vec<Bytes>,
    /// A frame taken from the queue that did not fit the current write.
    held: Option<Frame>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("queued_bytes", &self.queued_bytes())
            .field("limit", &self.shared.limit)
            .finish()
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl Outbound {
    /// How long a send may wait for room, and a write make no progress.
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_nanos(self.shared.send_timeout.load(Ordering::Relaxed))
    }

    /// Changes it, for the waits and writes that start from now on.
    pub(crate) fn set_send_timeout(&self, d: Duration) {
        self.shared.send_timeout.store(nanos(d), Ordering::Relaxed);
    }

    /// A queue of at most `limit_bytes` bytes whose producers wait at most `send_timeout`.
    pub(crate) fn new(limit_bytes: usize, send_timeout: Duration) -> (Outbound, OutboundRx) {
        let limit = limit_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        let (tx, rx) = mpsc::unbounded_channel();
        let outbound = Outbound {
            shared: Arc::new(QueueState {
                tx,
                budget: Semaphore::new(limit as usize),
                limit,
                send_timeout: AtomicU64::new(nanos(send_timeout)),
                killed: watch::channel(None).0,
                counters: OnceLock::new(),
                publishes_queued: AtomicUsize::new(0),
                cut_reported: AtomicBool::new(false),
            }),
        };
        let rx = OutboundRx {
            rx,
            outbound: outbound.clone(),
            keep_unsent: false,
            abortive: false,
            counters: None,
        };
        (outbound, rx)
    }

    /// Budget a packet of `len` bytes holds: its length, capped so that a packet larger
    /// than the whole queue can still pass when the queue is empty.
    fn permits_for(&self, len: usize) -> u32 {
        (len.min(u32::MAX as usize) as u32).clamp(1, self.shared.limit)
    }

    fn closed_error(&self) -> SendError {
        SendError::Closed(self.close_reason().unwrap_or(CloseReason::Closed))
    }

    /// Queues `bytes` if the budget allows it right now. `Ok(false)`: the queue is full.
    pub(crate) fn try_send(&self, bytes: &Bytes) -> Result<bool, SendError> {
        self.try_send_tagged(bytes, false)
    }

    /// [`Outbound::try_send`] for a publish.
    pub(crate) fn try_send_publish(&self, bytes: &Bytes) -> Result<bool, SendError> {
        self.try_send_tagged(bytes, true)
    }

    fn try_send_tagged(&self, bytes: &Bytes, publish: bool) -> Result<bool, SendError> {
        let n = self.permits_for(bytes.len());
        match self.shared.budget.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                self.push_data(bytes.clone(), n, publish)?;
                Ok(true)
            }
            Err(TryAcquireError::NoPermits) => Ok(false),
            Err(TryAcquireError::Closed) => Err(self.closed_error()),
        }
    }

    /// Queues `bytes`, waiting up to the send timeout for room; on timeout the connection
    /// is killed as a slow consumer.
    pub(crate) async fn send(&self, bytes: Bytes) -> Result<(), SendError> {
        self.send_frame(bytes, false, false).await
    }

    /// [`Outbound::send`] for a publish.
    pub(crate) async fn send_publish(&self, bytes: Bytes) -> Result<(), SendError> {
        self.send_frame(bytes, false, true).await
    }

    /// Like [`Outbound::send`], but the writer puts these bytes in a write of their own.
    pub(crate) async fn send_alone(&self, bytes: Bytes) -> Result<(), SendError> {
        self.send_frame(bytes, true, false).await
    }

    async fn send_frame(&self, bytes: Bytes, alone: bool, publish: bool) -> Result<(), SendError> {
        let n = self.permits_for(bytes.len());
        // Room now is the common case: no timer for it. The waiting is boxed so that
        // every send's future stays small (it is moved on each call).
        match self.shared.budget.try_acquire_many(n) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(self.closed_error()),
            Err(TryAcquireError::NoPermits) => Box::pin(self.wait_for_room(n)).await?,
        }
        if alone {
            self.push(Frame::Alone(bytes, n))
        } else {
            self.push_data(bytes, n, publish)
        }
    }

    fn push_data(&self, bytes: Bytes, n: u32, publish: bool) -> Result<(), SendError> {
        if publish {
            self.shared.publishes_queued.fetch_add(1, Ordering::Relaxed);
        }
        self.push(Frame::Data(bytes, n, publish))
    }

    /// Waits up to the send timeout for `n` permits; kills the connection if none come.
    async fn wait_for_room(&self, n: u32) -> Result<(), SendError> {
        let acquire = self.shared.budget.acquire_many(n);
        let timeout = self.send_timeout();
        match tokio::time::timeout(timeout, acquire).await {
            Ok(Ok(permit)) => permit.forget(),
            Ok(Err(_closed)) => return Err(self.closed_error()),
            Err(_elapsed) => {
                let err = SendError::CutOff(timeout);
                self.kill(err.clone().reason());
                return Err(err);
            }
        }
        Ok(())
    }

    fn push(&self, frame: Frame) -> Result<(), SendError> {
        self.shared.tx.send(frame).map_err(|_| self.closed_error())
    }

    /// Asks the writer to flush what is queued and then close the write half.
    pub(crate) fn close(&self) {
        let _ = self.shared.tx.send(Frame::Close);
    }

    /// Ends the connection now: queued bytes are abandoned, waiting producers fail, and
    /// [`Outbound::killed`] fires. The first reason given is kept.
    pub(crate) fn kill(&self, reason: CloseReason) {
        self.shared.budget.close();
        let slow = reason.is_slow_consumer();
        let first = self.shared.killed.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
        if first && slow {
            if let Some(c) = self.shared.counters.get() {
                c.count_cut_off(1);
            }
        }
    }

    /// For the first publish report that finds this connection cut off as a slow consumer
    /// (by its own send, an earlier one, or the writer): the publishes earlier reports
    /// counted as delivered that were thrown away with the queue. `None` afterwards, and
    /// for connections that are live or ended otherwise.
    pub(crate) fn take_cut(&self) -> Option<usize> {
        let cut = self.close_reason().is_some_and(|r| r.is_slow_consumer());
        (cut && !self.shared.cut_reported.swap(true, Ordering::AcqRel))
            .then(|| self.shared.publishes_queued.load(Ordering::Acquire))
    }

    /// Why the connection was killed, if it was.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.shared.killed.borrow().clone()
    }

    /// Resolves once the connection is killed, with the reason.
    pub(crate) async fn killed(&self) -> CloseReason {
        let mut rx = self.shared.killed.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // The sender lives in `self.shared`, so it cannot be gone while we hold it.
            Err(_) => None,
        };
        reason.unwrap_or(CloseReason::Closed)
    }

    /// Bytes currently queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.limit as usize - self.shared.budget.available_permits()
    }

    /// Whether the connection was killed.
    pub(crate) fn is_killed(&self) -> bool {
        self.shared.killed.borrow().is_some()
    }
}

impl OutboundRx {
    /// Makes [`OutboundRx::run`] give back, whole, every packet it had not finished writing
    /// when the connection ended (the clever-show client re-sends them on its next link;
    /// a half-written packet is never continued on another connection).
    pub(crate) fn keep_unsent(mut self) -> Self {
        self.keep_unsent = true;
        self
    }

    /// Ends the connection without the orderly shutdown when it is closed (for a socket
    /// with SO_LINGER 0, which then resets instead of waiting in TIME_WAIT).
    pub(crate) fn abortive(mut self, yes: bool) -> Self {
        self.abortive = yes;
        self
    }

    /// Adds what this writer sends to `counters`.
    pub(crate) fn count_into(mut self, counters: Arc<crate::server::traffic::Counters>) -> Self {
        let _ = self.outbound.shared.counters.set(counters.clone());
        self.counters = Some(counters);
        self
    }

    /// Drains the queue into `w` until a close is requested, the connection is killed or
    /// the socket fails. A write that makes no progress for the send timeout kills the
    /// connection. The connection is always killed on return, so its reader stops too.
    /// Returns the unsent packets if [`OutboundRx::keep_unsent`] was asked for, else none.
    pub(crate) async fn run<W: AsyncWrite + Unpin>(mut self, mut w: W) -> Vec<Bytes> {
        let mut batch = Batch::default();
        let reason = self.write_loop(&mut w, &mut batch).await;
        self.outbound.kill(reason);
        if !self.keep_unsent {
            return Vec::new();
        }
        // No producer can queue more from here on; what is queued is still received.
        self.rx.close();
        let mut unsent: Vec<Bytes> = batch
            .originals
            .into_iter()
            .zip(batch.bufs)
            .filter(|(_, left)| !left.is_empty())
            .map(|(whole, _)| whole)
            .collect();
        let held = batch.held.into_iter();
        let queued = std::iter::from_fn(|| self.rx.try_recv().ok());
        unsent.extend(held.chain(queued).filter_map(|f| match f {
            Frame::Data(b, ..) | Frame::Alone(b, _) => Some(b),
            Frame::Close => None,
        }));
        unsent
    }

    // One function on purpose: the hot path runs from the queue to one vectored write with no
    // call between, and its states (held frame, batch, closing) are easier to check together.
    async fn write_loop<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        st: &mut Batch,
    ) -> CloseReason {
        let out = self.outbound.clone();
        let killed = out.killed();
        tokio::pin!(killed);
        loop {
            let first = match st.held.take() {
                Some(f) => f,
                // Idle: also watch for a kill, since this task's own handle keeps the queue
                // open, and a killed connection must release its socket whoever owns it.
                None => tokio::select! {
                    f = self.rx.recv() => match f {
                        Some(f) => f,
                        None => return CloseReason::Closed,
                    },
                    why = &mut killed => return why,
                },
            };
            let batch = &mut st.bufs;
            let mut permits: usize = 0;
            let mut publishes: usize = 0;
            let mut closing = false;
            match first {
                Frame::Close => closing = true,
                Frame::Alone(b, n) => {
                    batch.push(b);
                    permits += n as usize;
                }
                Frame::Data(b, n, publish) => {
                    let mut bytes = b.len();
                    batch.push(b);
                    permits += n as usize;
                    publishes += usize::from(publish);
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match self.rx.try_recv() {
                            Ok(Frame::Data(b, n, publish)) => {
                                bytes += b.len();
                                batch.push(b);
                                permits += n as usize;
                                publishes += usize::from(publish);
                            }
                            Ok(other) => {
                                st.held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            if !batch.is_empty() {
                if self.keep_unsent {
                    st.originals.clone_from(batch);
                }
                // What the traffic counters get, if anyone counts (before the write
                // empties the buffers).
                let counted = self.counters.as_ref().map(|_| {
                    (
                        batch.len() as u64,
                        batch.iter().map(Bytes::len).sum::<usize>() as u64,
                    )
                });
                let send_timeout = out.send_timeout();
                let write = write_all_vectored(w, batch, send_timeout);
                tokio::select! {
                    res = write => match res {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            return CloseReason::SlowConsumer { timeout: send_timeout }
                        }
                        Err(e) => return CloseReason::WriteFailed(e.to_string().into()),
                    },
                    reason = &mut killed => return reason,
                }
                batch.clear();
                st.originals.clear();
                out.shared.budget.add_permits(permits);
                if publishes > 0 {
                    out.shared
                        .publishes_queued
                        .fetch_sub(publishes, Ordering::Release);
                }
                if let (Some(c), Some((packets, bytes))) = (&self.counters, counted) {
                    c.add_out(packets, bytes);
                }
            }
            if closing {
                if !self.abortive {
                    let _ = tokio::time::timeout(out.send_timeout(), w.shutdown()).await;
                }
                return CloseReason::Closed;
            }
        }
    }
}

/// Writes every buffer in `bufs`, as few syscalls as the socket allows; a fully written
/// buffer is emptied. A socket that takes no byte for `stall` fails with `TimedOut` (a large
/// packet may take longer than `stall` in all, as long as it keeps moving).
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &mut [Bytes],
    stall: Duration,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < bufs.len() {
        if bufs[first].is_empty() {
            first += 1;
            continue;
        }
        let mut written = {
            let slices: Vec<IoSlice<'_>> = bufs[first..].iter().map(|b| IoSlice::new(b)).collect();
            match tokio::time::timeout(stall, w.write_vectored(&slices)).await {
                Ok(res) => res?,
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let len = bufs[first].len();
            if written >= len {
                written -= len;
                bufs[first] = Bytes::new();
                first += 1;
            } else {
                bufs[first].advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that takes `room` bytes, then fails every write.
    struct Breaks {
        room: usize,
        got: Vec<u8>,
    }

    impl AsyncWrite for Breaks {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.room == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_broken_socket_gives_back_every_unfinished_packet_whole() {
        let (out, rx) = Outbound::new(1 << 20, Duration::from_secs(5));
        for p in [&b"aaaaaa"[..], b"bbbbbb", b"cccccc"] {
            out.send(Bytes::from_static(p)).await.unwrap();
        }
        let mut sock = Breaks {
            room: 10,
            got: Vec::new(),
        };
        let unsent = rx.keep_unsent().run(&mut sock).await;
        assert_eq!(sock.got, b"aaaaaabbbb");
        assert_eq!(unsent, vec![Bytes::from("bbbbbb"), Bytes::from("cccccc")]);
        assert!(out.is_killed());
        assert!(out.send(Bytes::from_static(b"late")).await.is_err());
    }

    #[tokio::test]
    async fn without_keep_unsent_nothing_is_given_back() {
        let (out, rx) = Outbound::new(1 << 20, Duration::from_secs(5));
        out.send(Bytes::from_static(b"aaaaaa")).await.unwrap();
        let mut sock = Breaks {
            room: 3,
            got: Vec::new(),
        };
        assert!(rx.run(&mut sock).await.is_empty());
    }
}
