//! The client's side of the login, sans-IO: which SERVINFO packets to send and what the
//! server's replies mean (docs/protocols/vsoa.md §4, and the challenge login of
//! docs/protocol-extensions.md). It takes packets and returns packets; `connect.rs` moves
//! the bytes and applies the connect deadline. The server's side is `server/login.rs`.

use std::net::SocketAddr;

use tether_wire::vsoa::{Packet, PacketType, Status};

use crate::server::Secret;
use crate::Error;

/// What to do after a reply.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this packet and feed the reply back.
    Send(Packet),
    /// Logged in.
    Done(LoggedIn),
}

/// A successful login.
#[derive(Debug, PartialEq)]
pub(crate) struct LoggedIn {
    /// The id the server gave this connection.
    pub(crate) id: u32,
    /// The server's info (a JSON value; text that is not JSON becomes a JSON string).
    pub(crate) info: serde_json::Value,
    /// The server's quick port, when the 6-byte form names one.
    pub(crate) quick_port: Option<u16>,
}

/// A login in progress.
#[derive(Debug)]
pub(crate) struct Login {
    addr: SocketAddr,
    secret: Option<Secret>,
    tunid: u16,
    /// A challenge answer was sent: the next reply is the verdict.
    answered: bool,
}

impl Login {
    /// Starts a login to `addr` (used in errors), advertising the quick channel's UDP port
    /// `tunid` (0: none). Returns the first packet to send.
    pub(crate) fn start(
        addr: SocketAddr,
        password: Option<&Secret>,
        secret: Option<&Secret>,
        tunid: u16,
    ) -> Result<(Login, Packet), Error> {
        let param = match (secret, password) {
            (Some(_), _) => serde_json::json!({ "challenge": crate::auth::ALGORITHM }),
            (None, Some(pw)) => serde_json::json!({ "passwd": pw.expose() }),
            (None, None) => serde_json::Value::Null,
        };
        let mut hello = Packet::new(PacketType::ServInfo).with_tunid(tunid);
        if !param.is_null() {
            hello.param = serde_json::to_vec(&param)?.into();
        }
        let login = Login {
            addr,
            secret: secret.cloned(),
            tunid,
            answered: false,
        };
        Ok((login, hello))
    }

    /// What the server's `reply` means.
    pub(crate) fn on_reply(&mut self, reply: &Packet) -> Result<Step, Error> {
        let addr = self.addr;
        if let Some(secret) = &self.secret {
            if !self.answered {
                // The server sent a seed (or refused); answer HMAC(secret, seed).
                let seed = seed_of(reply).ok_or(Error::WrongSecret { addr })?;
                let answer = crate::auth::answer(secret.expose().as_bytes(), &seed);
                let response = Packet::new(PacketType::ServInfo)
                    .with_tunid(self.tunid)
                    .with_param(serde_json::to_vec(
                        &serde_json::json!({ "response": crate::auth::to_hex(&answer) }),
                    )?);
                self.answered = true;
                return Ok(Step::Send(response));
            }
            if reply.status == Status::PASSWORD {
                return Err(Error::WrongSecret { addr });
            }
        }
        if reply.ptype != PacketType::ServInfo || !reply.is_reply() {
            return Err(Error::Malformed {
                addr,
                detail: format!("expected a SERVINFO reply, got {:?}", reply.ptype),
            });
        }
        if reply.status == Status::PASSWORD {
            return Err(Error::WrongPassword { addr });
        }
        if !reply.status.is_success() {
            return Err(Error::Refused {
                what: "the login".into(),
                status: reply.status,
            });
        }
        let id = match reply.data.first_chunk::<4>() {
            Some(b) if reply.data.len() == 4 || reply.data.len() == 6 => u32::from_be_bytes(*b),
            _ => {
                return Err(Error::Malformed {
                    addr,
                    detail: format!(
                        "handshake data of {} bytes, expected 4 or 6",
                        reply.data.len()
                    ),
                })
            }
        };
        // The 6-byte form names the server's quick port when it differs from the TCP port.
        let quick_port = reply
            .data
            .get(4..6)
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        let info = if reply.param.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&reply.param).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&reply.param).into_owned())
            })
        };
        Ok(Step::Done(LoggedIn {
            id,
            info,
            quick_port,
        }))
    }
}

/// The challenge seed of a successful SERVINFO reply that carries no client id yet.
fn seed_of(reply: &Packet) -> Option<Vec<u8>> {
    if reply.ptype != PacketType::ServInfo || !reply.status.is_success() || !reply.data.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&reply.param).ok()?;
    crate::auth::from_hex(v.get("seed")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tether_wire::vsoa::Flags;

    fn addr() -> SocketAddr {
        "127.0.0.1:3005".parse().unwrap()
    }

    fn reply(status: Status, param: Value, data: &[u8]) -> Packet {
        let mut p = Packet::new(PacketType::ServInfo);
        p.flags = Flags::REPLY;
        p.status = status;
        if !param.is_null() {
            p.param = serde_json::to_vec(&param).unwrap().into();
        }
        p.data = data.to_vec().into();
        p
    }

    fn param(p: &Packet) -> Value {
        serde_json::from_slice(&p.param).unwrap()
    }

    fn done(step: Step) -> LoggedIn {
        match step {
            Step::Done(l) => l,
            other => panic!("expected a login, got {other:?}"),
        }
    }

    #[test]
    fn password_login_and_what_the_reply_carries() {
        let pw = Secret::new("123456");
        let (mut login, hello) = Login::start(addr(), Some(&pw), None, 36219).unwrap();
        assert_eq!(hello.ptype, PacketType::ServInfo);
        assert_eq!(hello.tunid, 36219);
        assert_eq!(param(&hello), json!({"passwd": "123456"}));
        let ok = reply(Status::SUCCESS, json!({"name": "demo"}), &[0, 0, 0, 7]);
        let l = done(login.on_reply(&ok).unwrap());
        assert_eq!(
            l,
            LoggedIn {
                id: 7,
                info: json!({"name": "demo"}),
                quick_port: None
            }
        );
        // The 6-byte form names a quick port; info that is not JSON becomes a string.
        let (mut login, _) = Login::start(addr(), None, None, 0).unwrap();
        let mut six = reply(Status::SUCCESS, Value::Null, &[0, 0, 0, 1, 0x1f, 0x90]);
        six.param = b"plain text".to_vec().into();
        let l = done(login.on_reply(&six).unwrap());
        assert_eq!((l.id, l.quick_port), (1, Some(8080)));
        assert_eq!(l.info, json!("plain text"));
    }

    #[test]
    fn no_password_sends_no_param() {
        let (_, hello) = Login::start(addr(), None, None, 0).unwrap();
        assert!(hello.param.is_empty());
    }

    #[test]
    fn refusals_and_malformed_replies_are_typed() {
        let start = || Login::start(addr(), None, None, 0).unwrap().0;
        let e = start()
            .on_reply(&reply(Status::PASSWORD, Value::Null, &[]))
            .unwrap_err();
        assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
        let e = start()
            .on_reply(&reply(Status(6), Value::Null, &[]))
            .unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        let e = start()
            .on_reply(&reply(Status::SUCCESS, Value::Null, &[0, 1]))
            .unwrap_err();
        assert!(e.to_string().contains("handshake data of 2 bytes"), "{e}");
        let mut rpc = reply(Status::SUCCESS, Value::Null, &[0, 0, 0, 1]);
        rpc.ptype = PacketType::Rpc;
        let e = start().on_reply(&rpc).unwrap_err();
        assert!(e.to_string().contains("expected a SERVINFO reply"), "{e}");
        let mut not_reply = reply(Status::SUCCESS, Value::Null, &[0, 0, 0, 1]);
        not_reply.flags = Flags::NONE;
        assert!(start().on_reply(&not_reply).is_err());
    }

    #[test]
    fn challenge_login_answers_the_seed_with_the_hmac_and_never_sends_the_secret() {
        let secret = Secret::new("s3cret");
        let pw = Secret::new("ignored-password");
        let (mut login, hello) = Login::start(addr(), Some(&pw), Some(&secret), 9).unwrap();
        assert_eq!(
            param(&hello),
            json!({"challenge": crate::auth::ALGORITHM}),
            "the secret takes precedence over the password"
        );
        let seed = [7u8; 16];
        let challenge = reply(
            Status::SUCCESS,
            json!({"seed": crate::auth::to_hex(&seed)}),
            &[],
        );
        let Step::Send(answer) = login.on_reply(&challenge).unwrap() else {
            panic!("expected an answer to the seed");
        };
        assert_eq!(answer.tunid, 9);
        let want = crate::auth::to_hex(&crate::auth::answer(b"s3cret", &seed));
        assert_eq!(param(&answer), json!({ "response": want }));
        assert!(!String::from_utf8_lossy(&answer.param).contains("s3cret"));
        let l = done(
            login
                .on_reply(&reply(Status::SUCCESS, Value::Null, &[0, 0, 0, 3]))
                .unwrap(),
        );
        assert_eq!(l.id, 3);

        // A wrong answer, and a server that sends no seed, are a wrong secret.
        let (mut login, _) = Login::start(addr(), None, Some(&secret), 0).unwrap();
        login.on_reply(&challenge).unwrap();
        let e = login
            .on_reply(&reply(Status::PASSWORD, Value::Null, &[]))
            .unwrap_err();
        assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
        let (mut login, _) = Login::start(addr(), None, Some(&secret), 0).unwrap();
        let e = login
            .on_reply(&reply(Status::SUCCESS, Value::Null, &[0, 0, 0, 1]))
            .unwrap_err();
        assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
    }
}
