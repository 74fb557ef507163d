//! What an endpoint knows about messages: services (request and response sids), names for
//! logs, the authentication whitelist, the callbacks and their priority
//! (docs/protocols/socket-protocol.md §7). Plain data, tested without a connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use tether_wire::sp::{did, sid, status, Message};

use super::{Callback, SpError};

/// Where an incoming message goes (after authentication and the built-in sids).
pub(crate) enum Route {
    /// To this callback; `response` is the response sid if the message is a request of a
    /// registered service.
    Callback {
        callback: Callback,
        response: Option<u32>,
    },
    /// Into the receive buffer; a request is answered status 1.
    Buffer { response: Option<u32> },
    /// Nothing knows it: answered status 4.
    Unknown,
}

pub(crate) struct Definitions {
    /// Request sid -> response sid.
    requests: HashMap<u32, u32>,
    /// Response sid -> request sid.
    responses: HashMap<u32, u32>,
    sid_names: HashMap<u32, Arc<str>>,
    data_names: HashMap<(u32, u32), Arc<str>>,
    status_names: HashMap<u32, Arc<str>>,
    whitelist: HashSet<(u32, u32)>,
    callbacks: HashMap<(Option<u32>, Option<u32>), Callback>,
}

impl Default for Definitions {
    /// The seed's services, data and statuses.
    fn default() -> Self {
        let mut d = Definitions {
            requests: HashMap::new(),
            responses: HashMap::new(),
            sid_names: HashMap::new(),
            data_names: HashMap::new(),
            status_names: HashMap::new(),
            whitelist: HashSet::new(),
            callbacks: HashMap::new(),
        };
        for (req, resp, what) in [
            (sid::AUTH_REQUEST, sid::AUTH_RESPONSE, "authentication"),
            (
                sid::CHANNEL_NAME_REQUEST,
                sid::CHANNEL_NAME_RESPONSE,
                "channel name",
            ),
            (sid::READ_REQUEST, sid::READ_RESPONSE, "read data"),
            (sid::WRITE_REQUEST, sid::WRITE_RESPONSE, "write data"),
            (sid::EXECUTE_REQUEST, sid::EXECUTE_RESPONSE, "execute"),
        ] {
            d.add_service(
                req,
                resp,
                Some(&format!("{what} request")),
                Some(&format!("{what} response")),
            )
            .expect("the defaults are distinct");
        }
        for s in [sid::AUTH_REQUEST, sid::AUTH_RESPONSE] {
            d.add_data(s, did::AUTH_SEED, "seed");
            d.add_data(s, did::AUTH_KEY, "key");
        }
        for s in [sid::CHANNEL_NAME_REQUEST, sid::CHANNEL_NAME_RESPONSE] {
            d.add_data(s, did::CHANNEL_NAME, "channel name");
        }
        for n in 0..=6 {
            if let Some(name) = status::name(n) {
                d.status_names.insert(n, name.into());
            }
        }
        d
    }
}

impl Definitions {
    pub(crate) fn add_service(
        &mut self,
        req: u32,
        resp: u32,
        req_name: Option<&str>,
        resp_name: Option<&str>,
    ) -> Result<(), SpError> {
        if self.requests.contains_key(&req) || self.responses.contains_key(&req) {
            return Err(SpError::RequestSidExists(req));
        }
        if self.responses.contains_key(&resp) || self.requests.contains_key(&resp) || resp == req {
            return Err(SpError::ResponseSidExists(resp));
        }
        self.requests.insert(req, resp);
        self.responses.insert(resp, req);
        if let Some(n) = req_name {
            self.sid_names.insert(req, n.into());
        }
        if let Some(n) = resp_name {
            self.sid_names.insert(resp, n.into());
        }
        Ok(())
    }

    pub(crate) fn add_data(&mut self, sid: u32, did: u32, name: &str) {
        self.data_names.insert((sid, did), name.into());
    }

    pub(crate) fn add_status(&mut self, status: u32, name: &str) {
        self.status_names.insert(status, name.into());
    }

    pub(crate) fn whitelist(&mut self, sid: u32, did: u32) {
        self.whitelist.insert((sid, did));
    }

    pub(crate) fn is_whitelisted(&self, sid: u32, did: u32) -> bool {
        self.whitelist.contains(&(sid, did))
    }

    /// Registers a callback; `None` means every sid (or did). Replaces the one registered
    /// for exactly the same pair.
    pub(crate) fn register(&mut self, sid: Option<u32>, did: Option<u32>, f: Callback) -> bool {
        self.callbacks.insert((sid, did), f).is_some()
    }

    /// The response sid of a request sid.
    pub(crate) fn response_sid(&self, sid: u32) -> Option<u32> {
        self.requests.get(&sid).copied()
    }

    /// The callback for a message, in the seed's priority order: sid and did, sid only, did
    /// only, neither.
    pub(crate) fn callback(&self, sid: u32, did: u32) -> Option<&Callback> {
        [
            (Some(sid), Some(did)),
            (Some(sid), None),
            (None, Some(did)),
            (None, None),
        ]
        .iter()
        .find_map(|k| self.callbacks.get(k))
    }

    /// Where a message goes (see [`Route`]): to its callback; else a status other than okay
    /// (an answer to something this side sent), a declared (sid, did) or a response sid of
    /// a service is buffered; anything else is unknown.
    pub(crate) fn route(&self, m: &Message) -> Route {
        let response = self.response_sid(m.service_id);
        if let Some(callback) = self.callback(m.service_id, m.data_id) {
            return Route::Callback {
                callback: callback.clone(),
                response,
            };
        }
        let known = m.status != status::OKAY
            || self.data_names.contains_key(&(m.service_id, m.data_id))
            || self.responses.contains_key(&m.service_id);
        if known {
            Route::Buffer { response }
        } else {
            Route::Unknown
        }
    }

    /// A message's ids with their names, for logs: `read data request (10), did 1, okay (0)`.
    pub(crate) fn describe(&self, sid: u32, did: u32, st: u32) -> String {
        let sid_part = match self.sid_names.get(&sid) {
            Some(n) => format!("{n} ({sid})"),
            None => format!("sid {sid}"),
        };
        let did_part = match self.data_names.get(&(sid, did)) {
            Some(n) => format!("{n:?} (did {did})"),
            None => format!("did {did}"),
        };
        let st_part = match self.status_names.get(&st) {
            Some(n) => format!("{n} ({st})"),
            None => format!("status {st}"),
        };
        format!("{sid_part}, {did_part}, {st_part}")
    }
}

/// A message's data for a log line: short.
pub(crate) fn brief(data: &Value) -> String {
    let mut s = data.to_string();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sp::Peer;

    thread_local! {
        static TAGS: std::cell::RefCell<Vec<(&'static str, Callback)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A callback that can be told apart from the others by its tag.
    fn tagged(tag: &'static str) -> Callback {
        let f: Callback = Arc::new(|_: Peer, _: Message| Box::pin(async { None }));
        TAGS.with(|t| t.borrow_mut().push((tag, f.clone())));
        f
    }

    fn which(d: &Definitions, sid: u32, did: u32) -> Option<&'static str> {
        let f = d.callback(sid, did)?;
        TAGS.with(|t| {
            t.borrow()
                .iter()
                .find(|(_, g)| Arc::ptr_eq(f, g))
                .map(|(tag, _)| *tag)
        })
    }

    #[test]
    fn the_priority_table_of_the_seed() {
        let mut d = Definitions::default();
        assert!(d.callback(10, 1).is_none());
        d.register(None, None, tagged("neither"));
        assert_eq!(which(&d, 10, 1), Some("neither"));
        d.register(None, Some(1), tagged("did"));
        assert_eq!(which(&d, 10, 1), Some("did"));
        assert_eq!(which(&d, 10, 2), Some("neither"));
        d.register(Some(10), None, tagged("sid"));
        assert_eq!(which(&d, 10, 1), Some("sid"), "sid only beats did only");
        assert_eq!(which(&d, 20, 1), Some("did"));
        d.register(Some(10), Some(1), tagged("both"));
        assert_eq!(which(&d, 10, 1), Some("both"));
        assert_eq!(which(&d, 10, 2), Some("sid"));
        assert_eq!(which(&d, 20, 2), Some("neither"));
        assert!(d.register(Some(10), Some(1), tagged("again")), "replaced");
        assert_eq!(which(&d, 10, 1), Some("again"));
    }

    #[test]
    fn a_request_or_response_sid_registered_twice_is_a_typed_error() {
        let mut d = Definitions::default();
        assert!(matches!(
            d.add_service(10, 50, None, None),
            Err(SpError::RequestSidExists(10))
        ));
        assert!(matches!(
            d.add_service(50, 11, None, None),
            Err(SpError::ResponseSidExists(11))
        ));
        assert!(matches!(
            d.add_service(11, 50, None, None),
            Err(SpError::RequestSidExists(11)),
        ));
        assert!(matches!(
            d.add_service(50, 50, None, None),
            Err(SpError::ResponseSidExists(50))
        ));
        d.add_service(50, 51, Some("motor request"), None).unwrap();
        assert_eq!(d.response_sid(50), Some(51));
        assert!(matches!(
            d.add_service(52, 51, None, None),
            Err(SpError::ResponseSidExists(51))
        ));
    }

    #[test]
    fn routes_without_a_callback() {
        let mut d = Definitions::default();
        let route = |d: &Definitions, m: Message| match d.route(&m) {
            Route::Callback { .. } => "callback",
            Route::Buffer { response: Some(_) } => "buffer request",
            Route::Buffer { response: None } => "buffer",
            Route::Unknown => "unknown",
        };
        assert_eq!(route(&d, Message::new(99, 0, Value::Null)), "unknown");
        assert_eq!(
            route(&d, Message::new(10, 1, Value::Null)),
            "unknown",
            "no such data"
        );
        assert_eq!(
            route(&d, Message::new(11, 1, Value::Null)),
            "buffer",
            "a response"
        );
        assert_eq!(
            route(&d, Message::new(99, 0, Value::Null).with_status(4)),
            "buffer",
            "an answer"
        );
        d.add_data(10, 1, "temperature");
        assert_eq!(
            route(&d, Message::new(10, 1, Value::Null)),
            "buffer request"
        );
        d.register(Some(10), None, tagged("x"));
        assert_eq!(route(&d, Message::new(10, 7, Value::Null)), "callback");
    }

    #[test]
    fn names_in_logs() {
        let mut d = Definitions::default();
        d.add_data(10, 1, "temperature");
        d.add_status(7, "motor hot");
        assert_eq!(
            d.describe(10, 1, 0),
            "read data request (10), \"temperature\" (did 1), okay (0)"
        );
        assert_eq!(d.describe(77, 2, 7), "sid 77, did 2, motor hot (7)");
        assert_eq!(brief(&Value::from("é".repeat(100))).len(), 120);
    }
}
