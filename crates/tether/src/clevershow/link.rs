//! What a clever-show peer keeps across its links, sans-IO (as rumqttc's `MqttState` is
//! kept apart from its framing): the frames that wait for the next link, the requests that
//! wait for an answer, and which link each request was last handed to. It takes and gives
//! plain frames; `peer.rs` moves them over sockets and wakes the waiters.
//!
//! The rules (docs/clevershow.md):
//!
//! * frames sent while no link is up wait, in order, up to a byte limit; they go first on
//!   the next link, before anything newer;
//! * a request is handed to at most two links: the one it was first sent on and, if that
//!   link dropped before the answer, the next one, with its original id, args and kwargs;
//!   when that link drops too, it fails;
//! * a request whose frame never left a link (the writer gave it back unwritten) is not
//!   counted as sent on it. Its frame is recognised by identity (the same buffer the
//!   state handed out), not by decoding it again;
//! * a request has a deadline, counted from when it was made and across reconnects; the
//!   caller hands the state the time ([`LinkState::expire`]), and the state says which
//!   requests are over it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use tether_wire::clevershow::{Frame, HeaderTooLong as EncodeError, ERROR_RESPONSES_KEY};

/// A request waiting for its answer.
pub(crate) struct Pending<W> {
    pub(crate) name: String,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    /// Links it was handed to: 0 (waiting for one), 1, or 2 (re-sent after a reconnect).
    sends: u8,
    /// The link it was last handed to (links count from 1).
    sent_on: u64,
    /// The frame last handed to a link, to recognise it if the link gives it back.
    frame: Option<Bytes>,
    /// When it is given up, and the timeout that deadline came from.
    deadline: Instant,
    pub(crate) timeout: Duration,
    /// Who waits for the answer.
    pub(crate) waiter: W,
}

/// How a new link starts.
#[derive(Debug, PartialEq)]
pub(crate) enum NewLink {
    /// Send these held frames first, in order, then ask again.
    SendHeld(Vec<Bytes>),
    /// The link is the current one now; send these requests on it (first sends of requests
    /// made while no link was up, and re-sends).
    Up { requests: Vec<Bytes> },
}

/// Why a frame cannot wait for the next link.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HoldFull {
    pub(crate) held: usize,
    pub(crate) limit: usize,
}

/// The most requests that may wait for answers at once (ids have four digits).
pub(crate) const MAX_PENDING: usize = 10_000;

/// See the module docs.
pub(crate) struct LinkState<W> {
    current: Option<u64>,
    held: VecDeque<Bytes>,
    held_bytes: usize,
    hold_limit: usize,
    pending: HashMap<String, Pending<W>>,
}

fn request_frame(id: &str, p: &Pending<impl Sized>) -> Result<Bytes, EncodeError> {
    Frame::request(&p.name, id, p.args.clone(), p.kwargs.clone())
        .with_extra(ERROR_RESPONSES_KEY, Value::Bool(true))
        .to_bytes()
}

impl<W> LinkState<W> {
    /// No link yet; at most `hold_limit` bytes wait for one.
    pub(crate) fn new(hold_limit: usize) -> Self {
        LinkState {
            current: None,
            held: VecDeque::new(),
            held_bytes: 0,
            hold_limit,
            pending: HashMap::new(),
        }
    }

    /// The current link, if one is up.
    pub(crate) fn current(&self) -> Option<u64> {
        self.current
    }

    /// Keeps `frame` for the next link.
    pub(crate) fn hold(&mut self, frame: Bytes) -> Result<(), HoldFull> {
        if self.held_bytes + frame.len() > self.hold_limit {
            return Err(HoldFull {
                held: self.held_bytes,
                limit: self.hold_limit,
            });
        }
        self.held_bytes += frame.len();
        self.held.push_back(frame);
        Ok(())
    }

    /// Puts frames back in front of what waits, in their order (a link broke while they
    /// were being sent).
    pub(crate) fn hold_front(&mut self, frames: Vec<Bytes>) {
        for f in frames.into_iter().rev() {
            self.held_bytes += f.len();
            self.held.push_front(f);
        }
    }

    /// Registers a request, made at `now` and given up after `timeout`, under the first id
    /// from `next_id` that no waiting request has; `None` when [`MAX_PENDING`] already wait.
    #[allow(clippy::too_many_arguments)] // a request's parts, its clock and its id source
    pub(crate) fn register(
        &mut self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        waiter: W,
        now: Instant,
        timeout: Duration,
        mut next_id: impl FnMut() -> String,
    ) -> Option<String> {
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        loop {
            let id = next_id();
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pending.entry(id.clone())
            {
                slot.insert(Pending {
                    name: name.to_string(),
                    args,
                    kwargs,
                    sends: 0,
                    sent_on: 0,
                    frame: None,
                    deadline: now + timeout,
                    timeout,
                    waiter,
                });
                return Some(id);
            }
        }
    }

    /// The frame for the first send of request `id` on the current link, marked as sent on
    /// it; `None` if there is no link (the next one sends it), no such request, or it was
    /// sent already.
    pub(crate) fn first_send(&mut self, id: &str) -> Result<Option<(u64, Bytes)>, EncodeError> {
        let Some(link) = self.current else {
            return Ok(None);
        };
        let Some(p) = self.pending.get_mut(id) else {
            return Ok(None);
        };
        if p.sends != 0 {
            return Ok(None);
        }
        let frame = request_frame(id, p)?;
        p.sends = 1;
        p.sent_on = link;
        p.frame = Some(frame.clone());
        Ok(Some((link, frame)))
    }

    /// The first send of `id` on `link` never reached the link: the next link sends it.
    pub(crate) fn first_send_failed(&mut self, id: &str, link: u64) {
        if let Some(p) = self.pending.get_mut(id) {
            if p.sent_on == link && p.sends == 1 {
                p.sends = 0;
                p.frame = None;
            }
        }
    }

    /// Link `number` is up: first the held frames (as often as some are held), then it
    /// becomes the current link with the requests to send on it.
    pub(crate) fn new_link(&mut self, number: u64) -> NewLink {
        if !self.held.is_empty() {
            self.held_bytes = 0;
            return NewLink::SendHeld(self.held.drain(..).collect());
        }
        self.current = Some(number);
        let mut requests = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.sent_on == number || p.sends >= 2 {
                continue;
            }
            match request_frame(id, p) {
                Ok(frame) => {
                    p.sends += 1;
                    p.sent_on = number;
                    p.frame = Some(frame.clone());
                    requests.push(frame);
                }
                Err(e) => tracing::warn!("request {} #{id} cannot be re-sent: {e}", p.name),
            }
        }
        NewLink::Up { requests }
    }

    /// Link `number` ended, and its writer gave back `unsent` (whole frames it had not
    /// written). Unsent requests are not counted as sent on it; other unsent frames wait
    /// for the next link, in front; the requests it carried after a re-send fail and are
    /// returned with their ids.
    pub(crate) fn link_down(
        &mut self,
        number: u64,
        unsent: Vec<Bytes>,
    ) -> Vec<(String, Pending<W>)> {
        if self.current == Some(number) {
            self.current = None;
        }
        let mut frames = Vec::new();
        for b in unsent {
            let request = self.pending.values_mut().find(|p| {
                p.sent_on == number
                    && p.frame
                        .as_ref()
                        .is_some_and(|f| f.as_ptr() == b.as_ptr() && f.len() == b.len())
            });
            match request {
                Some(p) => {
                    p.sends = p.sends.saturating_sub(1);
                    p.frame = None;
                }
                None => frames.push(b),
            }
        }
        self.hold_front(frames);
        let gone: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent_on == number && p.sends >= 2)
            .map(|(id, _)| id.clone())
            .collect();
        gone.into_iter()
            .filter_map(|id| self.pending.remove(&id).map(|p| (id, p)))
            .collect()
    }

    /// The waiter of request `id` if this answer is for it (the name must match too, as in
    /// the original); the request is done.
    pub(crate) fn answer(&mut self, id: &str, name: &str) -> Option<W> {
        match self.pending.get(id) {
            Some(p) if p.name == name => self.pending.remove(id).map(|p| p.waiter),
            _ => None,
        }
    }

    /// The requests whose deadline has passed at `now`, with their ids; they are done.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(String, Pending<W>)> {
        let gone: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        gone.into_iter()
            .filter_map(|id| self.pending.remove(&id).map(|p| (id, p)))
            .collect()
    }

    /// The earliest deadline of a waiting request.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Request `id` is no longer waited for (its first send failed, or its caller gave up).
    pub(crate) fn forget(&mut self, id: &str) {
        self.pending.remove(id);
    }

    /// Drops every frame waiting for a link (`resume_queue` off); how many there were.
    pub(crate) fn drop_held(&mut self) -> usize {
        self.held_bytes = 0;
        let n = self.held.len();
        self.held.clear();
        n
    }

    /// Takes every waiting request (`resend_requests` off: they fail with the link).
    pub(crate) fn take_pending(&mut self) -> Vec<(String, Pending<W>)> {
        self.pending.drain().collect()
    }

    /// Closed for good: nothing waits any more; the waiters to fail.
    pub(crate) fn close(&mut self) -> Vec<W> {
        self.current = None;
        self.held.clear();
        self.held_bytes = 0;
        self.pending.drain().map(|(_, p)| p.waiter).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::clevershow::{Content, Decoder};

    const MINUTE: Duration = Duration::from_secs(60);

    #[allow(non_snake_case)]
    fn T0() -> Instant {
        use std::sync::OnceLock;
        static T: OnceLock<Instant> = OnceLock::new();
        *T.get_or_init(Instant::now)
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("{n:04}")
        }
    }

    fn decode(frame: &Bytes) -> Frame {
        let mut buf = bytes::BytesMut::from(&frame[..]);
        Decoder::with_max_content(usize::MAX)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    fn requests(step: NewLink) -> Vec<Bytes> {
        match step {
            NewLink::Up { requests } => requests,
            other => panic!("expected the link up, got {other:?}"),
        }
    }

    fn kwargs() -> Map<String, Value> {
        serde_json::json!({"k": "v"}).as_object().cloned().unwrap()
    }

    #[test]
    fn a_request_made_without_a_link_goes_out_on_the_next_with_its_own_arguments() {
        let mut s = LinkState::new(1000);
        let id = s
            .register(
                "id",
                vec![Value::from(7)],
                kwargs(),
                (),
                T0(),
                MINUTE,
                ids(),
            )
            .unwrap();
        assert_eq!(s.first_send(&id).unwrap(), None, "no link yet");
        let sent = requests(s.new_link(1));
        assert_eq!(sent.len(), 1);
        let frame = decode(&sent[0]);
        let Content::Json(Value::Object(c)) = frame.content else {
            panic!("a JSON request")
        };
        assert_eq!(c["request_id"], Value::from(id.as_str()));
        assert_eq!(c["args"], serde_json::json!([7]));
        assert_eq!(c["kwargs"], serde_json::json!({"k": "v"}));
        assert_eq!(s.current(), Some(1));
    }

    #[test]
    fn a_request_goes_to_two_links_at_most_and_then_fails() {
        let mut s = LinkState::new(1000);
        requests(s.new_link(1));
        let id = s
            .register("time", vec![], Map::new(), "waiter", T0(), MINUTE, ids())
            .unwrap();
        let (link, _frame) = s.first_send(&id).unwrap().unwrap();
        assert_eq!(link, 1);
        assert!(s.first_send(&id).unwrap().is_none(), "sent once only");
        // Link 1 drops after writing it: re-sent once on link 2.
        assert!(s.link_down(1, vec![]).is_empty());
        assert_eq!(requests(s.new_link(2)).len(), 1);
        // Link 2 drops too: it fails, with its waiter.
        let failed = s.link_down(2, vec![]);
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].0.as_str(), failed[0].1.waiter),
            (id.as_str(), "waiter")
        );
        assert!(requests(s.new_link(3)).is_empty());
    }

    #[test]
    fn a_request_the_writer_gave_back_is_not_counted_as_sent() {
        let mut s = LinkState::new(1000);
        requests(s.new_link(1));
        let id = s
            .register("id", vec![], Map::new(), (), T0(), MINUTE, ids())
            .unwrap();
        let (_, frame) = s.first_send(&id).unwrap().unwrap();
        let action = Frame::action("led", vec![], Map::new()).to_bytes().unwrap();
        // The writer gives back both, unwritten (clones of the buffers it was handed).
        let failed = s.link_down(1, vec![action.clone(), frame.clone()]);
        assert!(failed.is_empty());
        // The action waits for the next link; the request is sent there as a first send,
        // and still has its second chance after that.
        assert_eq!(s.new_link(2), NewLink::SendHeld(vec![action]));
        assert_eq!(requests(s.new_link(2)).len(), 1);
        assert!(s.link_down(2, vec![]).is_empty());
        assert_eq!(requests(s.new_link(3)).len(), 1);
        assert_eq!(s.link_down(3, vec![]).len(), 1);
        // A frame with the same bytes but another buffer is not the request's.
        let mut s = LinkState::new(1000);
        requests(s.new_link(1));
        let id = s
            .register("id", vec![], Map::new(), (), T0(), MINUTE, ids())
            .unwrap();
        let (_, frame) = s.first_send(&id).unwrap().unwrap();
        let copy = Bytes::copy_from_slice(&frame);
        s.link_down(1, vec![copy.clone()]);
        assert_eq!(s.new_link(2), NewLink::SendHeld(vec![copy]));
    }

    #[test]
    fn held_frames_keep_their_order_and_their_limit() {
        let mut s: LinkState<()> = LinkState::new(10);
        s.hold(Bytes::from_static(b"aaaa")).unwrap();
        s.hold(Bytes::from_static(b"bbbb")).unwrap();
        assert_eq!(
            s.hold(Bytes::from_static(b"cccc")),
            Err(HoldFull { held: 8, limit: 10 })
        );
        let NewLink::SendHeld(first) = s.new_link(1) else {
            panic!("held frames first")
        };
        assert_eq!(first, [&b"aaaa"[..], &b"bbbb"[..]]);
        assert_eq!(s.current(), None, "not up until the held frames are out");
        // The link broke while sending the second: it goes back in front.
        s.hold(Bytes::from_static(b"cc")).unwrap();
        s.hold_front(vec![first[1].clone()]);
        assert_eq!(
            s.new_link(2),
            NewLink::SendHeld(vec![Bytes::from_static(b"bbbb"), Bytes::from_static(b"cc")])
        );
        assert_eq!(requests(s.new_link(2)), Vec::<Bytes>::new());
        assert_eq!(s.current(), Some(2));
    }

    #[test]
    fn answers_must_match_id_and_name_and_close_returns_every_waiter() {
        let mut s = LinkState::new(1000);
        let id = s
            .register("id", vec![], Map::new(), 1, T0(), MINUTE, ids())
            .unwrap();
        let other = s
            .register("time", vec![], Map::new(), 2, T0(), MINUTE, ids())
            .unwrap();
        assert_ne!(id, other, "ids taken are skipped");
        assert_eq!(s.answer(&id, "time"), None, "the name must match");
        assert_eq!(s.answer(&id, "id"), Some(1));
        assert_eq!(s.answer(&id, "id"), None, "answered once");
        s.forget(&other);
        let third = s
            .register("x", vec![], Map::new(), 3, T0(), MINUTE, ids())
            .unwrap();
        assert_eq!(s.close(), vec![3]);
        assert_eq!(s.answer(&third, "x"), None);
    }

    #[test]
    fn no_more_than_max_pending_wait() {
        let mut s = LinkState::new(0);
        let mut next = ids();
        for _ in 0..MAX_PENDING {
            assert!(s
                .register("r", vec![], Map::new(), (), T0(), MINUTE, &mut next)
                .is_some());
        }
        assert!(s
            .register("r", vec![], Map::new(), (), T0(), MINUTE, &mut next)
            .is_none());
    }

    #[test]
    fn requests_expire_at_their_deadline_on_the_clock_they_are_given() {
        let mut s = LinkState::new(0);
        let t0 = T0();
        let a = s
            .register(
                "a",
                vec![],
                Map::new(),
                'a',
                t0,
                Duration::from_secs(1),
                ids(),
            )
            .unwrap();
        let b = s
            .register(
                "b",
                vec![],
                Map::new(),
                'b',
                t0,
                Duration::from_secs(2),
                ids(),
            )
            .unwrap();
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(s.expire(t0 + Duration::from_millis(999)).is_empty());
        let gone = s.expire(t0 + Duration::from_millis(1500));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.as_str(), gone[0].1.waiter), (a.as_str(), 'a'));
        assert_eq!(gone[0].1.timeout, Duration::from_secs(1));
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(s.answer(&b, "b"), Some('b'), "b is still waited for");
        assert_eq!(s.next_deadline(), None);
    }
}
