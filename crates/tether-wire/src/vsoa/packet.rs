//! The packet model: type, flags, status and the three body parts, and its encoder.

use bytes::{BufMut, Bytes, BytesMut};

use super::{HEADER_LEN, MAGIC, MAX_BODY_LEN};

/// What a packet is for (byte 1 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PacketType {
    /// Handshake: the client's login request and the server's info reply.
    ServInfo,
    /// Remote procedure call, GET or SET.
    Rpc,
    /// Subscribe to one URL or a JSON list of URLs.
    Subscribe,
    /// Undo a subscription.
    Unsubscribe,
    /// Server -> client message on a subscribed URL.
    Publish,
    /// Unacknowledged message in either direction.
    Datagram,
    /// Server -> client: the client's new priority travels in the status byte.
    QosSetup,
    /// Keep-alive filler; never answered.
    #[default]
    Noop,
    /// Ping request and its echo.
    PingEcho,
    /// A type this implementation does not know; receivers ignore it.
    Unknown(u8),
}

impl PacketType {
    /// The type for a header byte.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0x00 => Self::ServInfo,
            0x01 => Self::Rpc,
            0x02 => Self::Subscribe,
            0x03 => Self::Unsubscribe,
            0x04 => Self::Publish,
            0x05 => Self::Datagram,
            0x06 => Self::QosSetup,
            0xfe => Self::Noop,
            0xff => Self::PingEcho,
            other => Self::Unknown(other),
        }
    }

    /// The header byte for this type.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::ServInfo => 0x00,
            Self::Rpc => 0x01,
            Self::Subscribe => 0x02,
            Self::Unsubscribe => 0x03,
            Self::Publish => 0x04,
            Self::Datagram => 0x05,
            Self::QosSetup => 0x06,
            Self::Noop => 0xfe,
            Self::PingEcho => 0xff,
            Self::Unknown(b) => b,
        }
    }
}

/// Header flags (byte 2 without its two pad-count bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// Set on every reply.
    pub const REPLY: Flags = Flags(0x01);
    /// The `tunid` field is valid.
    pub const TUNNEL: Flags = Flags(0x02);
    /// RPC method SET (absent: GET).
    pub const SET: Flags = Flags(0x04);
    /// No flag.
    pub const NONE: Flags = Flags(0);

    /// Flags from a header byte; the pad count (bits 6-7) is masked off.
    pub fn from_wire(b: u8) -> Self {
        Flags(b & 0x3f)
    }

    /// The raw bits (0..=0x3f).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus `other`.
    #[must_use]
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// Status byte of a reply. Values above [`Status::PROXY`] are the application's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u8);

impl Status {
    /// Success.
    pub const SUCCESS: Status = Status(0);
    /// Wrong or missing password.
    pub const PASSWORD: Status = Status(1);
    /// Bad arguments: URL missing or not starting with `/`, bad subscription list.
    pub const ARGUMENTS: Status = Status(2);
    /// No handler matched the URL.
    pub const INVALID_URL: Status = Status(3);
    /// The server did not respond.
    pub const NO_RESPONDING: Status = Status(4);
    /// Not allowed.
    pub const NO_PERMISSIONS: Status = Status(5);
    /// Out of memory or another resource.
    pub const NO_MEMORY: Status = Status(6);
    /// A proxy failed to reach its target (npm package).
    pub const PROXY: Status = Status(7);

    /// Whether this is [`Status::SUCCESS`].
    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// A short English name for logs and error messages.
    pub fn describe(self) -> &'static str {
        match self.0 {
            0 => "success",
            1 => "wrong or missing password",
            2 => "invalid arguments",
            3 => "no handler for this URL",
            4 => "server not responding",
            5 => "no permission",
            6 => "out of memory",
            7 => "proxy error",
            _ => "application-defined status",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, self.describe())
    }
}

/// One VSOA packet. `url`, `param` and `data` are `Bytes`, so a decoded packet's parts are
/// slices of the read buffer and cloning a packet never copies its body. An empty part is
/// "absent" on the wire (length 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    /// What the packet is for.
    pub ptype: PacketType,
    /// REPLY / TUNNEL / SET.
    pub flags: Flags,
    /// Status (replies) or priority (QOSSETUP).
    pub status: Status,
    /// Request/reply matching number; client id on client->server quick datagrams.
    pub seqno: u32,
    /// Client UDP port (handshake) or stream port (RPC reply); valid with TUNNEL.
    pub tunid: u16,
    /// URL bytes, normally UTF-8 starting with `/`.
    pub url: Bytes,
    /// Parameter, normally JSON text.
    pub param: Bytes,
    /// Opaque binary data.
    pub data: Bytes,
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The URL does not fit the 16-bit length field.
    #[error("URL of {len} bytes is longer than the 65535 bytes VSOA allows")]
    UrlTooLong {
        /// URL length.
        len: usize,
    },
    /// url + param + data exceed the 256 KiB packet limit.
    #[error("packet body of {len} bytes exceeds VSOA's limit of {max} bytes (url + param + data)")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
}

impl Packet {
    /// A packet of type `ptype` with everything else zero or empty.
    pub fn new(ptype: PacketType) -> Self {
        Packet {
            ptype,
            ..Packet::default()
        }
    }

    /// The reply skeleton for `request`: same type and seqno, REPLY set, the given status.
    pub fn reply_to(request: &Packet, status: Status) -> Self {
        Packet {
            ptype: request.ptype,
            flags: Flags::REPLY,
            status,
            seqno: request.seqno,
            ..Packet::default()
        }
    }

    /// Sets the URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<Bytes>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets the param.
    #[must_use]
    pub fn with_param(mut self, param: impl Into<Bytes>) -> Self {
        self.param = param.into();
        self
    }

    /// Sets the data.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets the seqno.
    #[must_use]
    pub fn with_seqno(mut self, seqno: u32) -> Self {
        self.seqno = seqno;
        self
    }

    /// Sets `tunid`, with the TUNNEL flag when it is non-zero.
    #[must_use]
    pub fn with_tunid(mut self, tunid: u16) -> Self {
        self.tunid = tunid;
        if tunid != 0 {
            self.flags = self.flags.with(Flags::TUNNEL);
        }
        self
    }

    /// Whether the REPLY flag is set.
    pub fn is_reply(&self) -> bool {
        self.flags.contains(Flags::REPLY)
    }

    /// `url + param + data` length.
    pub fn body_len(&self) -> usize {
        self.parts().body_len()
    }

    /// Bytes this packet occupies on the wire, padding included.
    pub fn encoded_len(&self) -> usize {
        self.parts().encoded_len()
    }

    /// Checks the length limits without encoding. `max_body` is [`super::MAX_BODY_LEN`] on
    /// TCP; the quick channel passes its smaller limit.
    pub fn check_len(&self, max_body: usize) -> Result<(), EncodeError> {
        self.parts().check_len(max_body)
    }

    /// Appends the packet to `dst`: header, URL, param, data, then zero pad bytes so the
    /// length is a multiple of 4, with the pad count in flag bits 6-7.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.parts().encode(dst)
    }

    /// Encodes into a fresh, exactly sized buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        self.parts().to_bytes()
    }

    /// The same packet with borrowed parts.
    pub fn parts(&self) -> PacketRef<'_> {
        PacketRef {
            ptype: self.ptype,
            flags: self.flags,
            status: self.status,
            seqno: self.seqno,
            tunid: self.tunid,
            url: &self.url,
            param: &self.param,
            data: &self.data,
        }
    }
}

/// A packet whose URL, param and data are borrowed: what the encoder writes. A sender that
/// holds a URL as `&str` encodes it from there, without copying it into a [`Packet`] first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    /// See [`Packet::ptype`].
    pub ptype: PacketType,
    /// See [`Packet::flags`].
    pub flags: Flags,
    /// See [`Packet::status`].
    pub status: Status,
    /// See [`Packet::seqno`].
    pub seqno: u32,
    /// See [`Packet::tunid`].
    pub tunid: u16,
    /// See [`Packet::url`].
    pub url: &'a [u8],
    /// See [`Packet::param`].
    pub param: &'a [u8],
    /// See [`Packet::data`].
    pub data: &'a [u8],
}

impl PacketRef<'_> {
    /// `url + param + data` length.
    pub fn body_len(&self) -> usize {
        self.url.len() + self.param.len() + self.data.len()
    }

    /// Bytes this packet occupies on the wire, padding included.
    pub fn encoded_len(&self) -> usize {
        let unpadded = HEADER_LEN + self.body_len();
        unpadded + pad_for(unpadded)
    }

    /// See [`Packet::check_len`].
    pub fn check_len(&self, max_body: usize) -> Result<(), EncodeError> {
        if self.url.len() > u16::MAX as usize {
            return Err(EncodeError::UrlTooLong {
                len: self.url.len(),
            });
        }
        let len = self.body_len();
        if len > max_body {
            return Err(EncodeError::TooLarge { len, max: max_body });
        }
        Ok(())
    }

    /// See [`Packet::encode`].
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.check_len(MAX_BODY_LEN)?;
        let unpadded = HEADER_LEN + self.body_len();
        let pad = pad_for(unpadded);
        dst.reserve(unpadded + pad);
        dst.put_u8(MAGIC);
        dst.put_u8(self.ptype.as_u8());
        dst.put_u8(self.flags.bits() | ((pad as u8) << 6));
        dst.put_u8(self.status.0);
        dst.put_u32(self.seqno);
        dst.put_u16(self.tunid);
        dst.put_u16(self.url.len() as u16);
        dst.put_u32(self.param.len() as u32);
        dst.put_u32(self.data.len() as u32);
        dst.put_slice(self.url);
        dst.put_slice(self.param);
        dst.put_slice(self.data);
        dst.put_bytes(0, pad);
        Ok(())
    }

    /// See [`Packet::to_bytes`].
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

fn pad_for(unpadded: usize) -> usize {
    (4 - unpadded % 4) % 4
}
