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

/// Policy packs compiled into the binary, by name (`packs:` in the config).
pub const PACKS: &[(&str, &str)] = &[(
    "india-strict",
    include_str!("../policies/india-strict.yaml"),
)];
/// The pack used when the config names no policy and no pack.
pub const DEFAULT_PACK: &str = "india-strict";

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
    /// Audit log cannot be opened or its key is unusable.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// The policy sources the config names: `policy` files first, then `packs`; the default
/// pack when neither is given.
pub fn policy_sources(config: &Config) -> Result<Vec<PolicySource>, PolicyError> {
    let mut sources = Vec::new();
    for p in &config.policy_paths {
        let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
            path: p.display().to_string(),
            source,
        })?;
        sources.push(PolicySource {
            origin: p.display().to_string(),
            text,
        });
    }
    let mut packs: Vec<&str> = config.packs.iter().map(String::as_str).collect();
    if sources.is_empty() && packs.is_empty() {
        packs.push(DEFAULT_PACK);
    }
    for name in packs {
        let Some((_, text)) = PACKS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = PACKS.iter().map(|(n, _)| *n).collect();
            return Err(PolicyError::Invalid {
                origin: "config packs".into(),
                problems: vec![format!(
                    "unknown pack `{name}`; embedded packs: {}",
                    known.join(", ")
                )],
            });
        };
        sources.push(PolicySource {
            origin: format!("embedded:policies/{name}.yaml"),
            text: (*text).to_owned(),
        });
    }
    Ok(sources)
}

/// Reads and compiles the configured policies, with the detector their classes need.
pub fn load_policy(config: &Config) -> Result<(Policy, Detector), PolicyError> {
    let sources = policy_sources(config)?;
    let (policy, detector) = policy::load(&sources, &policy::today())?;
    for e in &policy.expired {
        tracing::warn!(rule = %e.id, expires = %e.expires, owner = ?e.owner, "exception expired and no longer applies");
    }
    Ok((policy, detector))
}

/// Builds a complete snapshot (policy, detector, geo) from the config: the unit a reload
/// swaps.
pub fn load_snapshot(config: &Config) -> Result<Snapshot, StartError> {
    let (policy, detector) = load_policy(config)?;
    let geo = load_geo(config)?;
    Ok(Snapshot {
        policy: Arc::new(policy),
        geo: Arc::new(geo),
        inspector: Arc::new(
            Inspector::new(Arc::new(detector)).with_max_body_bytes(config.inspect_max_body_bytes),
        ),
    })
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
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    watch_task: Option<JoinHandle<()>>,
    audit: crate::audit::AuditHandle,
    audit_task: JoinHandle<()>,
}

/// Rebuilds the snapshot from the config's files and swaps it in atomically (I6):
/// requests in flight finish on the version they started with; a version that fails to
/// load is never swapped in, and the reason is kept for `/readyz` and `/policy`.
pub struct Reloader {
    config: Config,
    shared: Arc<Shared>,
    health: Arc<Health>,
    lock: tokio::sync::Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new version is serving.
    Swapped {
        /// New policy hash.
        hash: String,
    },
    /// Nothing changed.
    Unchanged,
}

impl Reloader {
    /// Loads and swaps. Runs the blocking file reads and compilation off the runtime.
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, String> {
        let _one_at_a_time = self.lock.lock().await;
        let config = self.config.clone();
        let loaded = tokio::task::spawn_blocking(move || load_snapshot(&config))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let metrics = &self.shared.metrics;
        match loaded {
            Ok(snap) => {
                let current = self.shared.snapshot.load();
                let same = current.policy.hash == snap.policy.hash
                    && current.geo.info() == snap.geo.info();
                if let Ok(mut e) = self.health.reload_error.lock() {
                    *e = None;
                }
                if same {
                    tracing::debug!(trigger, "reload: nothing changed");
                    return Ok(Reloaded::Unchanged);
                }
                let hash = snap.policy.hash.clone();
                tracing::info!(trigger, policy = %snap.policy.name, policy.hash = %hash, geo.build_epoch = snap.geo.info().build_epoch, "reloaded policy and geo database");
                metrics.set_loaded(&snap.policy, &snap.geo, &snap.inspector);
                self.shared.snapshot.store(Arc::new(snap));
                metrics.reloads.with_label_values(&["success"]).inc();
                let now = unix_now();
                metrics
                    .last_reload_success
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                self.health.loaded_at.store(now, Ordering::Relaxed);
                Ok(Reloaded::Swapped { hash })
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "reload failed; the running policy and geo database stay in force");
                metrics.reloads.with_label_values(&["failure"]).inc();
                if let Ok(mut slot) = self.health.reload_error.lock() {
                    *slot = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// The files a change to which should trigger a reload.
    fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let mut v = self.config.policy_paths.clone();
        v.extend(self.config.geo.database.clone());
        v
    }

    /// Watches the folders of the policy files and geo database; ConfigMap updates and
    /// geoipupdate replace files by atomic rename, so the folder is what must be watched.
    fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        use notify::Watcher;
        let files = self.watched_files();
        if files.is_empty() {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let names: Vec<std::ffi::OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_owned()))
            .collect();
        let mut watcher =
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    // Only our files, or the `..data` symlink Kubernetes swaps for ConfigMaps.
                    let relevant = ev.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| names.iter().any(|m| m == n) || n == "..data")
                    });
                    if relevant {
                        let _ = tx.try_send(());
                    }
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch policy files; reload with SIGHUP");
                    return None;
                }
            };
        let mut dirs: Vec<std::path::PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(|p| p.to_path_buf()))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch folder; reload with SIGHUP");
            }
        }
        Some(tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    got = rx.recv() => {
                        if got.is_none() { return; }
                        // Let a burst of writes settle, then reload once.
                        tokio::time::sleep(DEFAULT_RELOAD_DEBOUNCE).await;
                        while rx.try_recv().is_ok() {}
                        let _ = self.reload("file change").await;
                    }
                    _ = stop.changed() => return,
                }
            }
        }))
    }
}

/// Writes to watched files are coalesced over this long before a reload.
pub const DEFAULT_RELOAD_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds everything and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let snapshot = load_snapshot(&config)?;
    let resolver = Resolver::new(&config.resolver)?;
    let routes = Routes::new(&config.routes)?;
    let metrics = Arc::new(Metrics::new(
        option_env!("SIMA_GIT_SHA").unwrap_or("unknown"),
    )?);
    metrics.set_loaded(&snapshot.policy, &snapshot.geo, &snapshot.inspector);

    let fingerprinter = crate::audit::Fingerprinter::load_or_create(&config.audit.key_file)?;
    let (audit, audit_task) = crate::audit::AuditWriter::start(crate::audit::AuditConfig {
        dir: config.audit.dir.clone(),
        max_file_bytes: config.audit.max_file_bytes,
        fsync_delay: config.audit.fsync_delay,
        queue: config.audit.queue,
        retention_days: config.audit.retention_days,
    })?;
    let proxy_listener = server::bind(config.listen, "listen").await?;
    let admin_listener = server::bind(config.admin_listen, "admin_listen").await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let info = StartInfo {
        proxy: proxy_addr,
        admin: admin_addr,
        policy_name: snapshot.policy.name.to_string(),
        policy_hash: snapshot.policy.hash.clone(),
        geo: snapshot.geo.info().clone(),
    };
    let shared = Arc::new(Shared::new(
        &config,
        snapshot,
        resolver,
        routes,
        metrics,
        vec![proxy_addr, admin_addr],
        crate::proxy::AuditSink {
            handle: audit.clone(),
            fingerprinter: Arc::new(fingerprinter),
        },
    ));
    let health = Arc::new(Health::default());
    health.loaded_at.store(unix_now(), Ordering::Relaxed);
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
        stop_rx.clone(),
    ));
    let reloader = Arc::new(Reloader {
        config,
        shared: shared.clone(),
        health: health.clone(),
        lock: tokio::sync::Mutex::new(()),
    });
    let watch_task = reloader.clone().watch(stop_rx);
    health.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        info,
        shared,
        health,
        reloader,
        stop,
        proxy_task,
        admin_task,
        watch_task,
        audit,
        audit_task,
    })
}

// === impl Running ===

impl Running {
    /// Reloads policies and the geo database (SIGHUP does this).
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, String> {
        self.reloader.reload(trigger).await
    }

    /// Stops accepting, reports not-ready, drains in-flight requests (bounded by the drain
    /// timeout), then stops the admin listener.
    pub async fn shutdown(self) {
        self.health.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let _ = self.proxy_task.await;
        let _ = self.admin_task.await;
        if let Some(t) = self.watch_task {
            let _ = t.await;
        }
        // Last: every record of the drained requests is on disk before exit.
        if let Err(e) = self.audit.close().await {
            tracing::error!(error = %e, "closing the audit log failed");
        }
        let _ = self.audit_task.await;
    }
}
