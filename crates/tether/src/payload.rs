//! The body every VSOA message carries: a param (normally JSON text) and opaque data.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tether_wire::url::check_url;
use tether_wire::vsoa::{Flags, PacketRef, PacketType, Status};

/// Param and data of a request, reply, publish or datagram. Both are `Bytes`: raw bytes
/// pass through untouched, and cloning never copies. Empty means absent on the wire.
///
/// ```
/// use tether::Payload;
/// let p = Payload::json(&serde_json::json!({"temp": 21.5})).unwrap().with_data(vec![1, 2, 3]);
/// assert_eq!(p.param_json::<serde_json::Value>().unwrap()["temp"], 21.5);
/// assert_eq!(&p.data[..], &[1, 2, 3]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// Parameter bytes, normally JSON text.
    pub param: Bytes,
    /// Opaque binary data.
    pub data: Bytes,
}

impl Payload {
    /// An empty payload (no param, no data).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A payload whose param is `value` serialised as compact JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Payload {
            param: serde_json::to_vec(value)?.into(),
            data: Bytes::new(),
        })
    }

    /// A payload with a raw param, sent byte for byte.
    pub fn raw(param: impl Into<Bytes>) -> Self {
        Payload {
            param: param.into(),
            data: Bytes::new(),
        }
    }

    /// The same payload with `data` attached.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    /// Parses the param as JSON into `T`.
    pub fn param_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.param)
    }

    /// The param as a JSON value; `None` when it is absent or not valid JSON.
    pub fn param_value(&self) -> Option<serde_json::Value> {
        if self.param.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.param).ok()
    }

    /// A PUBLISH or DATAGRAM packet carrying this payload on `url`, after checking that the
    /// URL is one VSOA accepts and that url + param + data fit in `max_body` bytes.
    pub(crate) fn packet<'a>(
        &'a self,
        ptype: PacketType,
        url: &'a str,
        max_body: usize,
    ) -> Result<PacketRef<'a>, crate::Error> {
        check_url(url.as_bytes())?;
        let packet = PacketRef {
            ptype,
            flags: Flags::default(),
            status: Status::SUCCESS,
            seqno: 0,
            tunid: 0,
            url: url.as_bytes(),
            param: &self.param,
            data: &self.data,
        };
        packet.check_len(max_body)?;
        Ok(packet)
    }

    /// Whether param and data are both absent.
    pub fn is_empty(&self) -> bool {
        self.param.is_empty() && self.data.is_empty()
    }
}
