//! Calls: the RPC builder and its reply.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tether_wire::url::check_url;
use tether_wire::vsoa::{Flags, Packet, PacketType, Status};

use super::{Client, DEFAULT_CALL_TIMEOUT};
use crate::server::Method;
use crate::{Error, Payload};

/// A reply to a call: status, payload and tunnel id. A non-zero status is not an error at
/// this level (VSOA servers may answer any status); see [`Response::into_ok`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status byte; 0 is success.
    pub status: Status,
    /// Reply param and data.
    pub payload: Payload,
    /// Stream port the server announced (0: none).
    pub tunid: u16,
}

impl Response {
    /// The payload if the status is success, else [`Error::Refused`].
    pub fn into_ok(self) -> Result<Payload, Error> {
        if self.status.is_success() {
            Ok(self.payload)
        } else {
            Err(Error::Refused {
                what: "the call".into(),
                status: self.status,
            })
        }
    }
}

/// The builder methods every kind of call shares (method, param, data, timeout), written
/// once for [`Call`], [`super::RobotCall`] and [`super::Fetch`]: each has `method`, `payload`
/// and `timeout` fields.
macro_rules! call_options {
    ($timeout_doc:literal) => {
        /// Method SET.
        pub fn set(mut self) -> Self {
            self.method = $crate::server::Method::Set;
            self
        }

        /// Method GET (the default).
        pub fn get(mut self) -> Self {
            self.method = $crate::server::Method::Get;
            self
        }

        /// The method.
        pub fn method(mut self, m: $crate::server::Method) -> Self {
            self.method = m;
            self
        }

        /// JSON param.
        pub fn json<T: serde::Serialize + ?Sized>(
            mut self,
            value: &T,
        ) -> Result<Self, $crate::Error> {
            self.payload.param = serde_json::to_vec(value)?.into();
            Ok(self)
        }

        /// Raw param bytes, sent as they are.
        pub fn param(mut self, param: impl Into<bytes::Bytes>) -> Self {
            self.payload.param = param.into();
            self
        }

        /// Binary data.
        pub fn data(mut self, data: impl Into<bytes::Bytes>) -> Self {
            self.payload.data = data.into();
            self
        }

        /// Param and data at once.
        pub fn payload(mut self, payload: $crate::Payload) -> Self {
            self.payload = payload;
            self
        }

        #[doc = $timeout_doc]
        pub fn timeout(mut self, t: std::time::Duration) -> Self {
            self.timeout = t;
            self
        }
    };
}
pub(crate) use call_options;

/// An RPC being prepared; `.await` it or call [`Call::send`].
#[must_use = "a Call does nothing until awaited"]
#[derive(Debug)]
pub struct Call<'a> {
    client: &'a Client,
    url: String,
    method: Method,
    payload: Payload,
    timeout: Duration,
}

impl<'a> Call<'a> {
    pub(super) fn new(client: &'a Client, url: &str) -> Self {
        Call {
            client,
            url: url.to_string(),
            method: Method::Get,
            payload: Payload::empty(),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    call_options!("How long to wait for the reply (default 60 s).");

    /// Sends the call and waits for its reply.
    pub async fn send(self) -> Result<Response, Error> {
        check_url(self.url.as_bytes())?;
        let mut packet = Packet::new(PacketType::Rpc)
            .with_url(Bytes::from(self.url.into_bytes()))
            .with_param(self.payload.param)
            .with_data(self.payload.data);
        if self.method == Method::Set {
            packet.flags = Flags::SET;
        }
        let what = |p: &Packet| format!("RPC {}", String::from_utf8_lossy(&p.url));
        let reply = self.client.request(packet, what, self.timeout).await?;
        Ok(Response {
            status: reply.status,
            payload: Payload {
                param: reply.param,
                data: reply.data,
            },
            tunid: if reply.flags.contains(Flags::TUNNEL) {
                reply.tunid
            } else {
                0
            },
        })
    }
}

impl<'a> IntoFuture for Call<'a> {
    type Output = Result<Response, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
