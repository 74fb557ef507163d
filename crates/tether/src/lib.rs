//! Tether: a VSOA-compatible messaging runtime on tokio.
//!
//! * [`Server`]: URL-routed RPC (GET/SET) with async handlers, publish/subscribe with VSOA's
//!   prefix matching, datagrams, pings, client priorities, hooks, graceful shutdown.
//! * [`Client`]: connect with a password, pipelined calls matched by sequence number,
//!   subscriptions as a [`Stream`](futures_core::Stream), datagrams, ping.
//!
//! Every byte goes through the sans-IO codecs of [`tether_wire`]; this crate adds sockets,
//! tasks, queues and timers.
//!
//! ```no_run
//! use tether::{Client, Payload, Reply, Server};
//!
//! # async fn demo() -> Result<(), tether::Error> {
//! let server = Server::builder().info(serde_json::json!({"name": "demo"})).build();
//! server.route("/echo", |req: tether::Request| async move { Reply::ok(req.payload) });
//! let listening = server.bind("127.0.0.1:0").await?;
//!
//! let client = Client::connect(&format!("vsoa://{}", listening.local_addr())).await?;
//! let reply = client.call("/echo").json(&serde_json::json!({"a": 1}))?.send().await?;
//! assert_eq!(reply.payload.param_value(), Some(serde_json::json!({"a": 1})));
//!
//! let mut sub = client.subscribe(["/sensors/"]).await?;
//! server.publish("/sensors/temp", Payload::json(&21.5)?).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
pub mod auth;
mod backoff;
pub mod clevershow;
pub mod client;
mod close;
mod error;
pub mod events;
#[cfg(feature = "nats")]
pub mod federation;
pub mod files;
mod framed;
pub mod keepalive;
pub mod listening;
mod outbound;
mod payload;
pub mod position;
mod random;
pub mod server;
pub mod sp;
pub mod stream;
pub mod timer;
pub mod tls;
pub mod transfer;
pub mod workqueue;

pub use address::{AddressError, Host, VsoaUrl};
pub use backoff::Backoff;
pub use client::{fetch, Client, Message, Response, Robot, RobotEvent, Subscription};
pub use close::CloseReason;
pub use error::Error;
pub use events::EventEmitter;
pub use keepalive::Keepalive;
pub use listening::{BindAddr, Listening};
pub use payload::Payload;
pub use server::{
    ClientEvent, ClientHandle, ClientSummary, Config, Datagram, LatencyHistogram, LatencySnapshot,
    LocalSubscriber, Method, Mode, PublishReport, Published, QuickReport, QuickStats, Reply,
    Request, Server, ServerBuilder, Traffic, WorkQueue,
};
pub use stream::{DataStream, PendingStream};
pub use tether_wire::vsoa::Status;
pub use timer::Timer;

/// Internals the fuzz targets drive (built only with `--cfg fuzzing`, as cargo-fuzz does).
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use crate::server::login::{Credentials, Login, Step};
    pub use crate::server::Secret;
}
