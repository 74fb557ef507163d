//! VSOA wire format: one 20-byte header, three length-prefixed parts (URL, param, data)
//! and 0-3 pad bytes, concatenated on a TCP stream or one per UDP datagram.
//!
//! [`Packet`] is the typed message, [`Packet::encode`] writes it with zero padding, and
//! [`Decoder`] cuts packets out of a growing read buffer without copying their bodies.

mod decoder;
mod packet;

pub use decoder::{DatagramError, DecodeError, Decoder};
pub use packet::{EncodeError, Flags, Packet, PacketRef, PacketType, Status};

/// Every VSOA packet starts with this byte: magic `0x9` in the low nibble, version 2 high.
pub const MAGIC: u8 = 0x29;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Largest packet any reference implementation accepts, header and pad included.
pub const MAX_PACKET_LEN: usize = 262_144;
/// Largest `url + param + data` that fits in [`MAX_PACKET_LEN`].
pub const MAX_BODY_LEN: usize = MAX_PACKET_LEN - HEADER_LEN;
/// Largest packet that fits in one UDP datagram on the quick channel.
pub const MAX_QUICK_PACKET_LEN: usize = 65_507;
/// Largest `url + param + data` that fits in [`MAX_QUICK_PACKET_LEN`].
pub const MAX_QUICK_BODY_LEN: usize = MAX_QUICK_PACKET_LEN - HEADER_LEN;

#[cfg(test)]
mod tests;
