//! Sima (सीमा, "border"): a data-localisation enforcement proxy.
//!
//! App backends send their egress through Sima as a forward proxy (plain HTTP and
//! `CONNECT` tunnels) or through reverse-proxy routes. For every request Sima finds out
//! where the bytes would really go (resolve, guard, geolocate the address it will dial),
//! applies the policy, and forwards, blocks with `451 Unavailable For Legal Reasons`, or
//! reports.
//!
//! ```text
//! client -> server.rs (accept, limits) -> hyper conn
//!   -> proxy/mod.rs::handle
//!      1 proxy/target.rs  parse                    bad target      -> 400
//!      2 snapshot         Arc<Policy> + geo
//!      3 resolve.rs       host -> [IpAddr]         timeout         -> 504
//!      4 guard.rs         drop forbidden ranges    none left       -> 403
//!      5 geo.rs           ip -> Country            unknown         -> policy decides (fail closed)
//!      6 policy::decide   Facts -> Decision        block           -> 451
//!      7 proxy/forward.rs | proxy/tunnel.rs   dial the checked SocketAddr, stream
//!      8 finish: metrics + one canonical log line
//! ```
//!
//! Imports point downward only: `policy`, `guard`, `geo` lookups import no socket code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod check;
pub mod civil;
pub mod cli;
pub mod coarse;
pub mod config;
pub mod drain;
pub mod geo;
pub mod guard;
pub mod inspect;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod resolve;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod tls;

/// Sima's version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
