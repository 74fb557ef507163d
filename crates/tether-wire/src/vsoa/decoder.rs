//! Streaming decoder: cuts whole packets off the front of a read buffer.
//!
//! The rules follow the receivers that every real peer was tested against (docs/protocols/vsoa.md §1):
//! wait for 20 header bytes; byte 0 must be `0x29`; the total is the header plus the three
//! declared lengths plus the declared pad count (0-3); totals above the limit are refused
//! before any body byte is buffered. Alignment is not required and pad bytes are never
//! read, because real senders leave stale garbage in them.

use bytes::{Buf, BytesMut};

use super::{Flags, Packet, PacketType, Status, HEADER_LEN, MAGIC, MAX_PACKET_LEN};

/// A stream that can no longer be decoded. Both errors mean the peer does not speak VSOA
/// (or lies about lengths): the only sane reaction is to close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Byte 0 was not `0x29`.
    #[error("not a VSOA packet: first byte is {found:#04x}, expected 0x29")]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// The header declares more than the packet limit.
    #[error("VSOA packet declares {declared} bytes, more than the limit of {max}")]
    TooLarge {
        /// Declared total, header and pad included.
        declared: u64,
        /// The limit in force.
        max: usize,
    },
}

/// Incremental VSOA decoder. Feed it the connection's read buffer; each call returns at
/// most one packet and consumes exactly its bytes.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_packet_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            max_packet_len: MAX_PACKET_LEN,
        }
    }
}

/// The declared total length of the packet whose header starts `header`.
fn declared_len(header: &[u8; HEADER_LEN]) -> u64 {
    let url = u16::from_be_bytes([header[10], header[11]]) as u64;
    let param = u32::from_be_bytes([header[12], header[13], header[14], header[15]]) as u64;
    let data = u32::from_be_bytes([header[16], header[17], header[18], header[19]]) as u64;
    let pad = (header[2] >> 6) as u64;
    HEADER_LEN as u64 + url + param + data + pad
}

impl Decoder {
    /// A decoder with the standard 256 KiB limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses packets longer than `max_packet_len` (header and pad
    /// included). Values above [`MAX_PACKET_LEN`] are allowed but break compatibility.
    pub fn with_max_packet_len(max_packet_len: usize) -> Self {
        Decoder { max_packet_len }
    }

    /// Decodes the next packet from the front of `buf`.
    ///
    /// `Ok(None)`: not enough bytes yet (capacity for the rest is reserved). An error is
    /// final: the stream is out of sync and must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        if header[0] != MAGIC {
            return Err(DecodeError::BadMagic { found: header[0] });
        }
        let declared = declared_len(header);
        if declared > self.max_packet_len as u64 {
            return Err(DecodeError::TooLarge {
                declared,
                max: self.max_packet_len,
            });
        }
        // Bounded by max_packet_len above, so this fits in usize.
        let total = declared as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        Ok(Some(parse_frame(frame)))
    }

    /// Decodes a packet that must fill `datagram` (the quick channel: one packet per UDP
    /// datagram). Bytes after the declared end are ignored.
    pub fn decode_datagram(&self, datagram: bytes::Bytes) -> Result<Packet, DatagramError> {
        let Some(header) = datagram.first_chunk::<HEADER_LEN>() else {
            return Err(DatagramError::Truncated {
                declared: HEADER_LEN as u64,
                got: datagram.len(),
            });
        };
        if header[0] != MAGIC {
            return Err(DatagramError::Decode(DecodeError::BadMagic {
                found: header[0],
            }));
        }
        let declared = declared_len(header);
        if declared > self.max_packet_len as u64 {
            return Err(DatagramError::Decode(DecodeError::TooLarge {
                declared,
                max: self.max_packet_len,
            }));
        }
        // The pad may be missing at the very end of a datagram; the body may not.
        let pad = (header[2] >> 6) as u64;
        if (datagram.len() as u64) < declared - pad {
            return Err(DatagramError::Truncated {
                declared,
                got: datagram.len(),
            });
        }
        let end = (declared as usize).min(datagram.len());
        Ok(parse_frame(datagram.slice(..end)))
    }
}

/// A UDP datagram that does not hold a whole packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Bad magic or oversize.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Fewer bytes than the header declares.
    #[error("truncated VSOA datagram: header declares {declared} bytes, got {got}")]
    Truncated {
        /// Declared total.
        declared: u64,
        /// Bytes received.
        got: usize,
    },
}

/// Splits a frame whose length was already checked against its header.
fn parse_frame(mut frame: bytes::Bytes) -> Packet {
    let ptype = PacketType::from_u8(frame[1]);
    let flags = Flags::from_wire(frame[2]);
    let status = Status(frame[3]);
    let mut header = frame.split_to(HEADER_LEN);
    header.advance(4);
    let seqno = header.get_u32();
    let tunid = header.get_u16();
    let url_len = header.get_u16() as usize;
    let param_len = header.get_u32() as usize;
    let data_len = header.get_u32() as usize;
    let url = frame.split_to(url_len);
    let param = frame.split_to(param_len);
    let data = frame.split_to(data_len);
    Packet {
        ptype,
        flags,
        status,
        seqno,
        tunid,
        url,
        param,
        data,
    }
}
