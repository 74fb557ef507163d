//! The login state machine of a connection: which first packets let a client in.
//!
//! Pure logic over packets (the seed comes from the caller), so it is unit-tested and fuzzed
//! without sockets. Rules, in order, for each packet before login completes:
//!
//! * SERVINFO `{"challenge": "hmac-sha256"}`: answered with a fresh seed (see
//!   [`crate::auth`]); refused if the server has no secret or a challenge is already open.
//! * SERVINFO `{"response": "<hex>"}`: passes if it answers the open challenge; anything
//!   else (no open challenge, wrong or malformed answer) is refused.
//! * while a challenge is open, any other packet is refused;
//! * a plain login (VSOA: the first packet of any type, password in `{"passwd": ...}`)
//!   passes when the password matches, or when the server has neither password nor secret;
//!   it is refused when the server requires the challenge or has only a secret.
//!
//! A refusal is answered by the caller with a reply of the packet's type and status 1, then
//! the connection is closed.

// Public for `tether::fuzzing` only; the runtime uses it inside the crate.
#![cfg_attr(not(fuzzing), allow(unreachable_pub))]

use serde_json::{Map, Value};
use tether_wire::vsoa::{Packet, PacketType, Status};

use super::Secret;
use crate::auth;

/// What a server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// Plain VSOA password, if any.
    pub password: Option<&'a Secret>,
    /// Shared secret for challenge login, if any.
    pub secret: Option<&'a Secret>,
    /// Refuse plain logins even when a password matches.
    pub require_secret: bool,
}

/// The outcome of one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Logged in: handle this packet normally from now on.
    Pass,
    /// Send this packet (the challenge) and wait for the answer.
    Reply(Packet),
    /// Refuse with status 1 and close, for this reason (for the log; never a secret).
    Refuse(&'static str),
}

/// Login progress of one connection.
#[derive(Debug, Default)]
pub struct Login {
    done: bool,
    seed: Option<[u8; auth::SEED_LEN]>,
}

impl Login {
    /// Whether the client is in.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Judges `packet`. `fresh_seed` is asked for a new random seed only when a challenge
    /// is requested; `None` from it refuses the login.
    pub fn step(
        &mut self,
        creds: Credentials<'_>,
        packet: &Packet,
        fresh_seed: impl FnOnce() -> Option<[u8; auth::SEED_LEN]>,
    ) -> Step {
        if self.done {
            return Step::Pass;
        }
        let fields: Option<Map<String, Value>> = serde_json::from_slice(&packet.param).ok();
        let field = |k: &str| fields.as_ref().and_then(|f| f.get(k));
        if packet.ptype == PacketType::ServInfo {
            if let Some(alg) = field("challenge") {
                let Some(_) = creds.secret else {
                    return Step::Refuse(
                        "challenge login requested, but this server has no secret",
                    );
                };
                if alg.as_str() != Some(auth::ALGORITHM) {
                    return Step::Refuse("unsupported challenge algorithm");
                }
                if self.seed.is_some() {
                    return Step::Refuse("a second challenge requested");
                }
                let Some(seed) = fresh_seed() else {
                    return Step::Refuse("no random seed available");
                };
                self.seed = Some(seed);
                let param = serde_json::json!({ "seed": auth::to_hex(&seed) });
                return Step::Reply(
                    Packet::reply_to(packet, Status::SUCCESS)
                        .with_param(serde_json::to_vec(&param).unwrap_or_default()),
                );
            }
            if let Some(response) = field("response") {
                let (Some(secret), Some(seed)) = (creds.secret, self.seed.take()) else {
                    return Step::Refuse("challenge answer without a challenge");
                };
                let answer = response.as_str().and_then(auth::from_hex);
                return match answer {
                    Some(a) if auth::verify(secret.expose().as_bytes(), &seed, &a) => {
                        self.done = true;
                        Step::Pass
                    }
                    _ => Step::Refuse("wrong challenge answer"),
                };
            }
        }
        if self.seed.is_some() {
            return Step::Refuse("expected the answer to the challenge");
        }
        if creds.require_secret {
            return Step::Refuse("this server requires challenge login");
        }
        match (creds.password, creds.secret) {
            (Some(pw), _) => {
                let given = field("passwd").and_then(Value::as_str);
                if given.is_some_and(|g| pw.matches(g.as_bytes())) {
                    self.done = true;
                    Step::Pass
                } else {
                    Step::Refuse("wrong or missing password")
                }
            }
            (None, Some(_)) => Step::Refuse("this server requires challenge login"),
            (None, None) => {
                self.done = true;
                Step::Pass
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servinfo(param: &str) -> Packet {
        Packet::new(PacketType::ServInfo).with_param(param.as_bytes().to_vec())
    }

    fn seed_of(step: &Step) -> Vec<u8> {
        let Step::Reply(p) = step else {
            panic!("{step:?}")
        };
        let v: Value = serde_json::from_slice(&p.param).unwrap();
        auth::from_hex(v["seed"].as_str().unwrap()).unwrap()
    }

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn challenge_then_right_answer_passes() {
        let secret = Secret::new("s3cret");
        let creds = Credentials {
            password: None,
            secret: Some(&secret),
            require_secret: false,
        };
        let mut login = Login::default();
        let step = login.step(creds, &servinfo(r#"{"challenge":"hmac-sha256"}"#), || {
            Some(SEED)
        });
        let seed = seed_of(&step);
        let answer = auth::to_hex(&auth::answer(b"s3cret", &seed));
        let resp = servinfo(&format!(r#"{{"response":"{answer}"}}"#));
        assert_eq!(login.step(creds, &resp, || None), Step::Pass);
        assert!(login.is_done());
    }

    #[test]
    fn refusals() {
        let secret = Secret::new("s");
        let pw = Secret::new("pw");
        let both = Credentials {
            password: Some(&pw),
            secret: Some(&secret),
            require_secret: false,
        };
        let strict = Credentials {
            require_secret: true,
            ..both
        };
        let only_secret = Credentials {
            password: None,
            ..both
        };
        let plain = Credentials {
            password: Some(&pw),
            secret: None,
            require_secret: false,
        };
        let step = |creds, p: &str| Login::default().step(creds, &servinfo(p), || Some(SEED));
        assert_eq!(step(both, r#"{"passwd":"pw"}"#), Step::Pass, "side by side");
        assert!(matches!(
            step(strict, r#"{"passwd":"pw"}"#),
            Step::Refuse(_)
        ));
        assert!(matches!(step(only_secret, "{}"), Step::Refuse(_)));
        assert!(matches!(
            step(plain, r#"{"challenge":"hmac-sha256"}"#),
            Step::Refuse(_)
        ));
        assert!(matches!(
            step(both, r#"{"challenge":"md5"}"#),
            Step::Refuse(_)
        ));
        assert!(
            matches!(step(both, r#"{"response":"00"}"#), Step::Refuse(_)),
            "no challenge open"
        );
        // Wrong answer, malformed answer, another packet while the challenge is open.
        for next in [
            r#"{"response":"00"}"#,
            r#"{"response":42}"#,
            r#"{"passwd":"pw"}"#,
        ] {
            let mut login = Login::default();
            login.step(both, &servinfo(r#"{"challenge":"hmac-sha256"}"#), || {
                Some(SEED)
            });
            assert!(
                matches!(login.step(both, &servinfo(next), || None), Step::Refuse(_)),
                "{next}"
            );
        }
        // A second challenge on the same connection.
        let mut login = Login::default();
        login.step(both, &servinfo(r#"{"challenge":"hmac-sha256"}"#), || {
            Some(SEED)
        });
        let again = login.step(both, &servinfo(r#"{"challenge":"hmac-sha256"}"#), || {
            Some(SEED)
        });
        assert!(matches!(again, Step::Refuse(_)));
    }

    #[test]
    fn an_answer_for_another_seed_is_refused() {
        let secret = Secret::new("s");
        let creds = Credentials {
            password: None,
            secret: Some(&secret),
            require_secret: false,
        };
        let replayed = auth::to_hex(&auth::answer(b"s", &[1; 32]));
        let mut login = Login::default();
        login.step(creds, &servinfo(r#"{"challenge":"hmac-sha256"}"#), || {
            Some([2; 32])
        });
        let step = login.step(
            creds,
            &servinfo(&format!(r#"{{"response":"{replayed}"}}"#)),
            || None,
        );
        assert_eq!(step, Step::Refuse("wrong challenge answer"));
    }
}
