//! The server's login state machine on arbitrary packet sequences (decoded from the input),
//! for every credential setup. Invariants: once refused, the connection is over; a login
//! never passes on a server with a password or secret unless the packet proved it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether::fuzzing::{Credentials, Login, Secret, Step};
use tether_wire::vsoa::Decoder;

fuzz_target!(|data: &[u8]| {
    let pw = Secret::new("pw");
    let secret = Secret::new("s3cret");
    let setups = [
        Credentials { password: None, secret: None, require_secret: false },
        Credentials { password: Some(&pw), secret: None, require_secret: false },
        Credentials { password: None, secret: Some(&secret), require_secret: false },
        Credentials { password: Some(&pw), secret: Some(&secret), require_secret: true },
    ];
    for creds in setups {
        let mut login = Login::default();
        let mut buf = BytesMut::from(data);
        let mut dec = Decoder::new();
        while let Ok(Some(packet)) = dec.decode(&mut buf) {
            match login.step(creds, &packet, || Some([9; 32])) {
                Step::Refuse(_) => break,
                Step::Pass => {
                    assert!(login.is_done());
                    if creds.secret.is_some() || creds.password.is_some() {
                        // Passing needs the password in this packet, or a challenge answer.
                        let text = String::from_utf8_lossy(&packet.param);
                        assert!(text.contains("passwd") || text.contains("response"), "{text}");
                    }
                    break;
                }
                Step::Reply(_) => assert!(!login.is_done()),
            }
        }
    }
});
