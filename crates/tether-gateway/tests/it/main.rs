//! The gateway's integration tests, in one test binary: the HTTP side, the juggler
//! protocol, and the real hat-juggler peers (0.7 and 0.6) in both directions.

mod app;
mod common;
mod http;
mod interop_peers_as_clients;
mod interop_rust_client;
mod juggler06;
mod protocol;
