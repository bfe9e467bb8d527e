//! Assembles a running Sima from a `Config`: loads policies and the geo database, builds
//! the resolver and routes, binds both listeners, and runs until told to stop. Used by
//! `main` and by the end-to-end tests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Health};
use crate::config::Config;
use crate::geo::{GeoDb, GeoError, GeoInfo, Locator};
use crate::inspect::detect::Detector;
use crate::inspect::Inspector;
use crate::metrics::Metrics;
use crate::policy::{self, Policy, PolicyError, PolicySource};
use crate::proxy::routes::{RouteError, Routes};
use crate::proxy::{Shared, Snapshot};
use crate::resolve::{ResolveError, Resolver};
use crate::server::{self, HttpSettings};

/// The policy compiled into the binary (`policies/india-strict.yaml`).
pub const EMBEDDED_POLICY: &str = include_str!("../policies/india-strict.yaml");
/// Its origin name in messages.
pub const EMBEDDED_POLICY_ORIGIN: &str = "embedded:policies/india-strict.yaml";

/// The detector: built-in classes (custom classes come with the policy language).
pub fn detector() -> Arc<Detector> {
    Arc::new(Detector::builtin())
}

/// Why Sima could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Policy problem.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Geo database problem.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Resolver problem.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Route problem.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Listener problem.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Metrics registry problem.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Reads the configured policy files (or the embedded default) and compiles them against
/// the detector's classes.
pub fn load_policy(config: &Config, detector: &Detector) -> Result<Policy, PolicyError> {
    let sources = if config.policy_paths.is_empty() {
        vec![PolicySource {
            origin: EMBEDDED_POLICY_ORIGIN.into(),
            text: EMBEDDED_POLICY.into(),
        }]
    } else {
        config
            .policy_paths
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|text| PolicySource {
                        origin: p.display().to_string(),
                        text,
                    })
                    .map_err(|source| PolicyError::Read {
                        path: p.display().to_string(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let classes: Vec<&str> = detector.classes().map(|(_, name)| name).collect();
    policy::compile(&sources, &classes)
}

/// Opens the configured geo database (or the embedded one) with the overrides.
pub fn load_geo(config: &Config) -> Result<Locator, GeoError> {
    let db = match &config.geo.database {
        Some(path) => GeoDb::open(path)?,
        None => GeoDb::embedded()?,
    };
    Ok(Locator::new(config.geo.overrides.clone(), db))
}

/// What started, for the start-up banner.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// Proxy address.
    pub proxy: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Policy name.
    pub policy_name: String,
    /// Policy hash.
    pub policy_hash: String,
    /// Geo database facts.
    pub geo: GeoInfo,
}

/// A running Sima.
pub struct Running {
    /// What it listens on and loaded.
    pub info: StartInfo,
    /// Shared state (metrics, snapshot).
    pub shared: Arc<Shared>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
}

/// Builds everything and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let detector = detector();
    let policy = load_policy(&config, &detector)?;
    let geo = load_geo(&config)?;
    let resolver = Resolver::new(&config.resolver)?;
    let routes = Routes::new(&config.routes)?;
    let metrics = Arc::new(Metrics::new(
        option_env!("SIMA_GIT_SHA").unwrap_or("unknown"),
    )?);
    metrics.set_policy(&policy.name, &policy.hash);
    metrics.set_geo_build(geo.info().build_epoch);
    let classes: Vec<&str> = detector.classes().map(|(_, n)| n).collect();
    metrics.precreate_classes(&classes);

    let proxy_listener = server::bind(config.listen, "listen").await?;
    let admin_listener = server::bind(config.admin_listen, "admin_listen").await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let info = StartInfo {
        proxy: proxy_addr,
        admin: admin_addr,
        policy_name: policy.name.clone(),
        policy_hash: policy.hash.clone(),
        geo: geo.info().clone(),
    };
    let snapshot = Snapshot {
        policy: Arc::new(policy),
        geo: Arc::new(geo),
        inspector: Arc::new(Inspector::new(detector)),
    };
    let shared = Arc::new(Shared::new(
        &config,
        snapshot,
        resolver,
        routes,
        metrics,
        vec![proxy_addr, admin_addr],
    ));
    let health = Arc::new(Health::default());
    let (stop, stop_rx) = watch::channel(false);
    let proxy_task = tokio::spawn(server::serve_proxy(
        proxy_listener,
        shared.clone(),
        HttpSettings::from_config(&config),
        stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        shared.clone(),
        health.clone(),
        stop_rx,
    ));
    health.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        info,
        shared,
        health,
        stop,
        proxy_task,
        admin_task,
    })
}

// === impl Running ===

impl Running {
    /// Stops accepting, reports not-ready, drains in-flight requests (bounded by the drain
    /// timeout), then stops the admin listener.
    pub async fn shutdown(self) {
        self.health.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let _ = self.proxy_task.await;
        let _ = self.admin_task.await;
    }
}
