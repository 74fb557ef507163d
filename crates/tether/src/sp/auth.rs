//! The seed/key exchange of docs/protocols/socket-protocol.md §6, sans-IO: messages in,
//! messages and states out.
//!
//! 1. client -> sid 0 (auth request), did 0 (seed), data null: "send me a seed";
//! 2. server -> sid 1 (auth response), did 0, data: 64 hex digits, 32 fresh random bytes;
//! 3. client -> sid 0, did 1 (key), data: the hex of HMAC-SHA256(key = secret, the 32 seed
//!    bytes);
//! 4. server -> sid 1, did 1, data `true` (trusted) or `false` (untrusted).
//!
//! A seed answers one key: a second key, or a key with no seed before it, is refused, so a
//! recorded key is worthless on any later exchange. Keys are compared in constant time. A
//! side without a secret answers status 6 (operation not permitted).

use serde_json::Value;
use tether_wire::sp::{did, sid, status, AuthState, Message};

use crate::auth::{answer, from_hex, new_seed, to_hex, verify, SEED_LEN};

/// What the server does with one auth request.
#[derive(Debug, PartialEq)]
pub(crate) struct Step {
    /// The answer to send, if any.
    pub(crate) reply: Option<Message>,
    /// The connection's state afterwards.
    pub(crate) state: AuthState,
    /// Whether a key was refused.
    pub(crate) refused: bool,
}

/// The server side: the seed waiting for its key.
#[derive(Debug, Default)]
pub(crate) struct ServerAuth {
    seed: Option<[u8; SEED_LEN]>,
}

impl ServerAuth {
    /// Handles a message on sid 0 (the caller checked the sid). `secret` is this side's.
    pub(crate) fn on_request(
        &mut self,
        m: &Message,
        secret: Option<&[u8]>,
        state: AuthState,
    ) -> Step {
        let reply = |data_id, data, st| {
            Some(Message::new(sid::AUTH_RESPONSE, data_id, data).with_status(st))
        };
        let Some(secret) = secret else {
            return Step {
                reply: reply(m.data_id, Value::Null, status::OPERATION_NOT_PERMITTED),
                state,
                refused: false,
            };
        };
        match m.data_id {
            did::AUTH_SEED => match new_seed() {
                Ok(seed) => {
                    self.seed = Some(seed);
                    Step {
                        reply: reply(did::AUTH_SEED, to_hex(&seed).into(), status::OKAY),
                        state: AuthState::SeedTransferred,
                        refused: false,
                    }
                }
                Err(e) => {
                    tracing::error!("socket_protocol: no random seed from the OS: {e}");
                    Step {
                        reply: reply(did::AUTH_SEED, Value::Null, status::CALLBACK_ERROR),
                        state: AuthState::Untrusted,
                        refused: false,
                    }
                }
            },
            did::AUTH_KEY => {
                let seed = self.seed.take();
                let key = m.data.as_str().and_then(from_hex);
                let good = match (seed, key) {
                    (Some(seed), Some(key)) => verify(secret, &seed, &key),
                    _ => false,
                };
                Step {
                    reply: reply(did::AUTH_KEY, good.into(), status::OKAY),
                    state: if good {
                        AuthState::Trusted
                    } else {
                        AuthState::Untrusted
                    },
                    refused: !good,
                }
            }
            other => Step {
                reply: reply(other, Value::Null, status::SERVICE_OR_DATA_UNKNOWN),
                state,
                refused: false,
            },
        }
    }
}

/// The client side's reaction to a message on sid 1.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientStep {
    /// Send this key (the state is then "key transferred").
    SendKey(Message),
    /// The server's verdict.
    Verdict(bool),
    /// The server cannot authenticate (it has no secret, or failed).
    Impossible(u32),
    /// Not part of an exchange this side started.
    Ignore,
}

/// What the client does with a message on sid 1, in state `state`.
pub(crate) fn client_step(m: &Message, secret: Option<&[u8]>, state: AuthState) -> ClientStep {
    if m.status != status::OKAY {
        return match state {
            AuthState::SeedRequested | AuthState::KeyTransferred => {
                ClientStep::Impossible(m.status)
            }
            _ => ClientStep::Ignore,
        };
    }
    match (m.data_id, state) {
        (did::AUTH_SEED, AuthState::SeedRequested) => {
            let (Some(secret), Some(seed)) = (secret, m.data.as_str().and_then(from_hex)) else {
                return ClientStep::Impossible(status::CALLBACK_ERROR);
            };
            let key = to_hex(&answer(secret, &seed));
            ClientStep::SendKey(Message::new(sid::AUTH_REQUEST, did::AUTH_KEY, key.into()))
        }
        (did::AUTH_KEY, AuthState::KeyTransferred) => {
            ClientStep::Verdict(m.data == Value::Bool(true))
        }
        _ => ClientStep::Ignore,
    }
}

/// The message that starts an exchange.
pub(crate) fn seed_request() -> Message {
    Message::new(sid::AUTH_REQUEST, did::AUTH_SEED, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    fn run(server: &mut ServerAuth, m: Message) -> Step {
        server.on_request(&m, Some(SECRET), AuthState::Untrusted)
    }

    #[test]
    fn the_whole_exchange_trusts_and_the_secret_never_travels() {
        let mut server = ServerAuth::default();
        let step = run(&mut server, seed_request());
        assert_eq!(step.state, AuthState::SeedTransferred);
        let seed_msg = step.reply.unwrap();
        assert_eq!(
            (seed_msg.service_id, seed_msg.data_id),
            (sid::AUTH_RESPONSE, did::AUTH_SEED)
        );
        assert_eq!(seed_msg.data.as_str().unwrap().len(), 64);
        let ClientStep::SendKey(key) =
            client_step(&seed_msg, Some(SECRET), AuthState::SeedRequested)
        else {
            panic!("a key")
        };
        let key_text = key.to_bytes().unwrap();
        assert!(!key_text.windows(SECRET.len()).any(|w| w == SECRET));
        let step = run(&mut server, key.clone());
        assert_eq!(step.state, AuthState::Trusted);
        let verdict = step.reply.unwrap();
        assert_eq!(verdict.data, Value::Bool(true));
        assert_eq!(
            client_step(&verdict, Some(SECRET), AuthState::KeyTransferred),
            ClientStep::Verdict(true)
        );
        // One answer per seed: the same key again is refused.
        let again = run(&mut server, key);
        assert_eq!((again.state, again.refused), (AuthState::Untrusted, true));
        assert_eq!(again.reply.unwrap().data, Value::Bool(false));
    }

    #[test]
    fn a_wrong_secret_a_replayed_key_and_garbage_are_refused() {
        let mut server = ServerAuth::default();
        let seed_msg = run(&mut server, seed_request()).reply.unwrap();
        let ClientStep::SendKey(wrong) =
            client_step(&seed_msg, Some(b"other"), AuthState::SeedRequested)
        else {
            panic!()
        };
        assert!(run(&mut server, wrong).refused);

        // A key made for one seed does not fit the next.
        let seed_1 = run(&mut server, seed_request()).reply.unwrap();
        let ClientStep::SendKey(key_1) =
            client_step(&seed_1, Some(SECRET), AuthState::SeedRequested)
        else {
            panic!()
        };
        let _seed_2 = run(&mut server, seed_request()).reply.unwrap();
        let replay = run(&mut server, key_1);
        assert_eq!((replay.state, replay.refused), (AuthState::Untrusted, true));

        for data in [Value::Null, "zz".into(), 5.into(), "".into()] {
            run(&mut server, seed_request());
            let m = Message::new(sid::AUTH_REQUEST, did::AUTH_KEY, data.clone());
            assert!(run(&mut server, m).refused, "{data}");
        }
        let no_seed = run(
            &mut server,
            Message::new(sid::AUTH_REQUEST, did::AUTH_KEY, "00".into()),
        );
        assert!(no_seed.refused, "a key without a seed");
    }

    #[test]
    fn a_side_without_a_secret_answers_status_6_and_unknown_dids_status_4() {
        let mut server = ServerAuth::default();
        let step = server.on_request(&seed_request(), None, AuthState::Untrusted);
        assert_eq!(step.reply.unwrap().status, status::OPERATION_NOT_PERMITTED);
        let seed_msg = step_reply(&mut server, Message::new(sid::AUTH_REQUEST, 7, Value::Null));
        assert_eq!(seed_msg.status, status::SERVICE_OR_DATA_UNKNOWN);
        let refusal = Message::new(sid::AUTH_RESPONSE, did::AUTH_SEED, Value::Null)
            .with_status(status::OPERATION_NOT_PERMITTED);
        assert_eq!(
            client_step(&refusal, Some(SECRET), AuthState::SeedRequested),
            ClientStep::Impossible(status::OPERATION_NOT_PERMITTED)
        );
        assert_eq!(
            client_step(&refusal, Some(SECRET), AuthState::Trusted),
            ClientStep::Ignore,
            "not in an exchange"
        );
    }

    fn step_reply(server: &mut ServerAuth, m: Message) -> Message {
        run(server, m).reply.unwrap()
    }
}
