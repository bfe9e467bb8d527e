//! Command line: `sima run | geo lookup` (and the subcommands later issues add).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

/// `sima --version` long form.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SIMA_GIT_SHA"),
    ", built ",
    env!("SIMA_BUILD_DATE"),
    ")"
);

/// Sima: a data-localisation enforcement proxy.
#[derive(Debug, Parser)]
#[command(name = "sima", version = LONG_VERSION, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (embedded defaults without --config).
    Run(RunArgs),
    /// Evaluate one request without sending it and explain the verdict (exit 0 allow or
    /// report, 1 deny).
    Check(CheckArgs),
    /// Policy tools: lint, test, schema.
    Policy {
        /// Policy subcommand.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit log tools.
    Audit {
        /// Audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Geolocation tools.
    Geo {
        /// Geo subcommand.
        #[command(subcommand)]
        command: GeoCommand,
    },
}

/// `sima run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML config file.
    #[arg(long, short = 'c', env = "SIMA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format (overrides the config's `log_format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Validate config, policies, geo database and routes, then exit.
    #[arg(long)]
    pub check_config: bool,
}

/// `sima check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// YAML config file (policies, geo, resolver).
    #[arg(long, short = 'c', env = "SIMA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// Header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Body from a file, or `-` for standard input.
    #[arg(long = "data-file", short = 'd')]
    pub data_file: Option<PathBuf>,
    /// Use this address instead of resolving: `host:ip` (repeatable).
    #[arg(long)]
    pub resolve: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Client address, for client groups (default 127.0.0.1).
    #[arg(long)]
    pub client: Option<std::net::IpAddr>,
    /// Proxy-auth credentials `user:password`.
    #[arg(long, short = 'U')]
    pub user: Option<String>,
    /// Absolute URL (`http://api.example.com/v1/users`), or `host:port` with -X CONNECT.
    pub url: String,
}

/// `sima policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Errors (file:line and a hint) and warnings (shadowed rules, unused classes, expiring
    /// exceptions). Exit 0 clean, 1 warnings with --strict, 2 errors.
    Lint {
        /// Policy files (or `pack:NAME` for an embedded pack).
        #[arg(required = true)]
        files: Vec<String>,
        /// Treat warnings as failures.
        #[arg(long)]
        strict: bool,
    },
    /// Run the `tests:` embedded in policy files; exit 1 if any fails.
    Test {
        /// Policy files (or `pack:NAME`).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Print the JSON Schema of policy files (for editors; also in policies/schema.json).
    Schema,
    /// Print an embedded pack (`sima policy show india-strict`), or list them.
    Show {
        /// Pack name.
        name: Option<String>,
    },
}

/// `sima audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; report the first broken link (file, line, what) and exit 1.
    Verify {
        /// Audit files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Blocked and reported flows by rule, data class, country, client group and host.
    Summary {
        /// Audit files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only records newer than this (`24h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `sima geo ...`
#[derive(Debug, Subcommand)]
pub enum GeoCommand {
    /// Print the country of each IP: `IP COUNTRY SOURCE`.
    Lookup {
        /// YAML config file (for geo.database and geo.overrides).
        #[arg(long, short = 'c', env = "SIMA_CONFIG")]
        config: Option<PathBuf>,
        /// Addresses to look up.
        #[arg(required = true)]
        ips: Vec<String>,
    },
}
