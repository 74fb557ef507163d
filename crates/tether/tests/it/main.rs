//! The integration tests of the `tether` runtime, in one test binary: each module is one
//! area (one binary links tokio and rustls once, where a binary per file linked them ten
//! times).

mod challenge;
mod clevershow;
mod client;
mod common;
mod limits;
mod options;
mod position;
mod quick;
mod relay;
mod robot;
mod server_protocol;
mod sp;
mod stream;
mod transfer;
