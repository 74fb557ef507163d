//! Every text decoder that faces peers or users: vsoa:// URLs, position server entries, hosts
//! files, and whole position-service datagrams.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tether::position::{parse_hosts, parse_server, PositionServer};
use tether::VsoaUrl;

fuzz_target!(|data: &[u8]| {
    let server = PositionServer::new(HashMap::new());
    if let Some(answer) = server.answer(data, "127.0.0.1:9".parse().unwrap()) {
        serde_json::from_slice::<serde_json::Value>(&answer).expect("answers are JSON");
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(url) = text.parse::<VsoaUrl>() {
        // What parses prints back to something that parses to the same place.
        let again: VsoaUrl = url.to_string().parse().expect("display re-parses");
        assert_eq!((again.host, again.port), (url.host, url.port));
    }
    let _ = parse_server(text);
    let _ = parse_hosts(text);
});
