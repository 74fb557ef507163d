//! Challenge login (docs/protocol-extensions.md): the secret never crosses the wire.
//!
//! 1. client -> SERVINFO, param `{"challenge": "hmac-sha256"}`;
//! 2. server -> SERVINFO reply, status 0, param `{"seed": "<64 hex digits>"}`, no data
//!    (no client id yet: the login is not complete);
//! 3. client -> SERVINFO, param `{"response": "<64 hex digits>"}`, the hex of
//!    HMAC-SHA256(key = secret, message = the 32 seed bytes);
//! 4. server -> the ordinary SERVINFO reply (info and client id), or status 1 and close.
//!
//! The seed is 32 bytes from the OS's CSPRNG, fresh for every connection, so an answer
//! recorded on one connection is worthless on another; the answer is checked in constant
//! time; one wrong answer closes the connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The only algorithm defined so far.
pub const ALGORITHM: &str = "hmac-sha256";
/// Seed length in bytes.
pub const SEED_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A fresh random seed.
pub(crate) fn new_seed() -> Result<[u8; SEED_LEN], getrandom::Error> {
    let mut seed = [0u8; SEED_LEN];
    getrandom::fill(&mut seed)?;
    Ok(seed)
}

/// HMAC-SHA256(secret, seed).
pub(crate) fn answer(secret: &[u8], seed: &[u8]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(seed);
    mac.finalize().into_bytes().into()
}

/// Whether `response` is the right answer for `seed`, compared in constant time.
pub(crate) fn verify(secret: &[u8], seed: &[u8], response: &[u8]) -> bool {
    match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(seed);
            mac.verify_slice(response).is_ok()
        }
        Err(_) => false,
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_test_case_2() {
        // HMAC-SHA256 with key "Jefe" over "what do ya want for nothing?".
        let mac = answer(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &mac));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &mac));
        assert!(!verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &mac[..31]
        ));
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
        assert_ne!(new_seed().unwrap(), new_seed().unwrap());
    }
}
