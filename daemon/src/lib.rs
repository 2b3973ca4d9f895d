//! knockd: the resident homeserver of knock-gated Matrix rooms.

pub mod admin;
pub mod bounded;
pub mod config;
pub mod error;
pub mod federation;
pub mod matrix;
pub mod metrics;
pub mod metrics_endpoint;
pub mod room;
pub mod sender;
pub mod server;
pub mod service;
pub mod store;
pub mod systemd;
pub mod tls;

pub use server::{Listeners, StartError, prepare, serve};
