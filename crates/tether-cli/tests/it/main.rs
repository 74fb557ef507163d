//! The `tether` command's integration tests, in one test binary: the CLI contract, TLS,
//! and the real VSOA peers against `tether serve` and against our client.

mod cli;
mod common;
mod faults;
mod federation;
mod interop_peers_as_clients;
mod interop_rust_client;
mod sp;
mod tls;
