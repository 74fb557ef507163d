//! The read-decode loop, written once (like mini-redis's `Connection::read_frame`): a read
//! half, its buffer and a sans-IO decoder from `tether_wire`. The server's and the client's
//! VSOA connections and every clever-show link read through it.
//!
//! It has two halves so that each connection keeps its own `select!` (timeouts, kills,
//! shutdown) around the only await: [`Framed::try_next`] decodes what is buffered, without
//! waiting, and [`Framed::fill`] reads once more. `fill` is cancel-safe (bytes read stay in
//! the buffer), and a connection decodes every whole frame of one read before it waits
//! again, so a burst of pipelined requests costs one wake-up. The end of the stream and
//! every failure come back as a [`CloseReason`].

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::CloseReason;

/// A streaming decoder of one wire format.
pub(crate) trait Decode {
    /// What it decodes.
    type Item;
    /// Why bytes are not that format.
    type Error: std::fmt::Display;
    /// Cuts one whole item off the front of `buf`; `Ok(None)` if more bytes are needed.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error>;
}

impl Decode for tether_wire::vsoa::Decoder {
    type Item = tether_wire::vsoa::Packet;
    type Error = tether_wire::vsoa::DecodeError;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        tether_wire::vsoa::Decoder::decode(self, buf)
    }
}

impl Decode for tether_wire::clevershow::Decoder {
    type Item = tether_wire::clevershow::Frame;
    type Error = tether_wire::clevershow::DecodeError;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        tether_wire::clevershow::Decoder::decode(self, buf)
    }
}

/// A read half with its buffer and decoder.
pub(crate) struct Framed<R, D> {
    rd: R,
    buf: BytesMut,
    decoder: D,
    /// Room made before a read when less than half of it is left: the trade between
    /// syscalls per byte and memory per idle connection, chosen by each side.
    reserve: usize,
}

impl<R: AsyncRead + Unpin, D: Decode> Framed<R, D> {
    /// Reads from `rd`, starting with the bytes already in `buf` (those read past a
    /// handshake, say).
    pub(crate) fn new(rd: R, buf: BytesMut, decoder: D, reserve: usize) -> Self {
        Framed {
            rd,
            buf,
            decoder,
            reserve,
        }
    }

    /// The next whole item in the buffer, if there is one; an error if the bytes are not
    /// the format.
    pub(crate) fn try_next(&mut self) -> Result<Option<D::Item>, CloseReason> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| CloseReason::Protocol(e.to_string().into()))
    }

    /// Reads once; the number of bytes read, or why the stream is over (the peer closed
    /// it, between items or in the middle of one, or the read failed). Cancel-safe.
    pub(crate) async fn fill(&mut self) -> Result<usize, CloseReason> {
        if self.buf.capacity() - self.buf.len() < self.reserve / 2 {
            self.buf.reserve(self.reserve);
        }
        match self.rd.read_buf(&mut self.buf).await {
            Ok(0) if self.buf.is_empty() => Err(CloseReason::PeerClosed),
            Ok(0) => Err(CloseReason::Truncated {
                unread: self.buf.len(),
            }),
            Ok(n) => Ok(n),
            Err(e) => Err(CloseReason::ReadFailed(e.to_string().into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_wire::vsoa::{Decoder, Packet, PacketType};

    #[tokio::test]
    async fn items_split_anywhere_come_out_whole_and_the_end_is_classified() {
        let one = Packet::new(PacketType::PingEcho).to_bytes().unwrap();
        let mut wire = one.to_vec();
        wire.extend_from_slice(&one);
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in wire.chunks(3) {
                tx.write_all(b).await.unwrap();
            }
            tx.write_all(&one[..5]).await.unwrap(); // half a packet, then EOF
        });
        let mut framed = Framed::new(rx, BytesMut::new(), Decoder::new(), 16);
        let mut got = 0;
        let end = loop {
            while let Some(p) = framed.try_next().unwrap() {
                assert_eq!(p.ptype, PacketType::PingEcho);
                got += 1;
            }
            if let Err(reason) = framed.fill().await {
                break reason;
            }
        };
        writer.await.unwrap();
        assert_eq!(got, 2);
        assert_eq!(end, CloseReason::Truncated { unread: 5 });

        let (tx, rx) = tokio::io::duplex(64);
        drop(tx);
        let mut framed = Framed::new(rx, BytesMut::new(), Decoder::new(), 16);
        assert_eq!(framed.fill().await, Err(CloseReason::PeerClosed));

        let mut framed = Framed::new(
            tokio::io::empty(),
            BytesMut::from(&b"not vsoa at all, twenty bytes or more"[..]),
            Decoder::new(),
            16,
        );
        assert!(matches!(framed.try_next(), Err(CloseReason::Protocol(_))));
    }
}
