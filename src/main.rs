//! The `sima` binary: parse the command line, load config, run; map errors to exit codes
//! (64 usage, 69 unavailable, 78 config).

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use sima::app;
use sima::cli::{AuditCommand, CheckArgs, Cli, Command, GeoCommand, PolicyCommand, RunArgs};
use sima::config::Config;
use sima::shutdown::{Signal, Signals};
use sima::telemetry;

/// glibc's malloc was a seventh of the proxy's user-space time per request (headers,
/// bodies and per-request state are many small, short-lived allocations across threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
        Command::Audit { command } => audit(command),
        Command::Policy { command } => policy(command),
        Command::Geo {
            command: GeoCommand::Lookup { config, ips },
        } => geo_lookup(config.as_deref(), &ips),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("sima: {e}");
            ExitCode::from(EX_CONFIG)
        }),
    }
}

/// `SIMA_WORKER_THREADS` threads, or one per CPU the process may use. With one, the
/// single-threaded scheduler: it has no work-stealing queues, cross-thread wake-ups or
/// per-batch timing to pay for (a pod with a one-CPU limit, the benchmark's pinned core).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("SIMA_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

fn run(args: RunArgs) -> ExitCode {
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    let _log_guard = telemetry::init(config.log_format);
    if args.check_config {
        return check_config(&config);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sima: cannot start the async runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    rt.block_on(async move {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sima: cannot install signal handlers: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        let running = match app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sima: {e}");
                return ExitCode::from(match e {
                    app::StartError::Io(_) => EX_UNAVAILABLE,
                    _ => EX_CONFIG,
                });
            }
        };
        let i = &running.info;
        tracing::info!(
            proxy = %i.proxy,
            admin = %i.admin,
            policy = %i.policy_name,
            policy.hash = %i.policy_hash,
            geo.database_type = %i.geo.database_type,
            geo.build_date = %sima::civil::ymd(i.geo.build_epoch),
            geo.origin = %i.geo.origin,
            "sima {} listening on {} (admin {}); policy {} ({}); geo database {} built {} ({})",
            sima::VERSION, i.proxy, i.admin, i.policy_name, i.policy_hash, i.geo.database_type, sima::civil::ymd(i.geo.build_epoch), i.geo.origin
        );
        loop {
            match signals.next().await {
                Signal::Terminate => break,
                Signal::Reload => {
                    let _ = running.reload("SIGHUP").await;
                }
            }
        }
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

fn check_config(config: &Config) -> ExitCode {
    let mut failed = false;
    match app::load_policy(config) {
        Ok((p, _)) => {
            println!(
                "policy: ok: {} ({}), {} rules",
                p.name,
                p.hash,
                p.rule_count()
            );
            for e in &p.expired {
                println!(
                    "policy: warning: exception {} expired on {}; it no longer applies",
                    e.id, e.expires
                );
            }
        }
        Err(e) => {
            println!("policy: error: {e}");
            failed = true;
        }
    }
    match app::load_geo(config) {
        Ok(g) => println!(
            "geo: ok: {} built {} ({})",
            g.info().database_type,
            sima::civil::ymd(g.info().build_epoch),
            g.info().origin
        ),
        Err(e) => {
            println!("geo: error: {e}");
            failed = true;
        }
    }
    match sima::proxy::routes::Routes::new(&config.routes) {
        Ok(_) => println!("routes: ok: {}", config.routes.len()),
        Err(e) => {
            println!("routes: error: {e}");
            failed = true;
        }
    }
    let dir = &config.audit.dir;
    let probe = dir.join(".sima-write-check");
    match std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
    {
        Ok(()) => println!(
            "audit: ok: {} is writable (key {})",
            dir.display(),
            config.audit.key_file.display()
        ),
        Err(e) => {
            println!("audit: error: {} is not writable: {e}", dir.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn geo_lookup(config: Option<&Path>, ips: &[String]) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let geo = match app::load_geo(&config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sima: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut bad = false;
    for raw in ips {
        let Ok(ip) = raw
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            eprintln!("sima: `{raw}` is not an IP address");
            bad = true;
            continue;
        };
        match geo.locate(ip) {
            Ok(l) => println!(
                "{ip} {} {}",
                l.country.as_ref().map_or("unknown", |c| c.as_str()),
                l.source.as_str()
            ),
            Err(e) => {
                println!("{ip} unknown error: {e}");
                bad = true;
            }
        }
    }
    if bad {
        ExitCode::from(EX_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let usage = |msg: String| {
        eprintln!("sima check: {msg}");
        ExitCode::from(EX_USAGE)
    };
    let Ok(method) = args.method.to_ascii_uppercase().parse::<http::Method>() else {
        return usage(format!("`{}` is not an HTTP method", args.method));
    };
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            return usage(format!("header `{h}` must be `Name: value`"));
        };
        match (
            http::header::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => return usage(format!("header `{h}` is not valid")),
        }
    }
    let body = match &args.data_file {
        None => Vec::new(),
        Some(p) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut v) {
                return usage(format!("cannot read standard input: {e}"));
            }
            v
        }
        Some(p) => match std::fs::read(p) {
            Ok(v) => v,
            Err(e) => return usage(format!("cannot read {}: {e}", p.display())),
        },
    };
    let mut resolve = Vec::new();
    for r in &args.resolve {
        match r
            .rsplit_once(':')
            .map(|(_, ip)| ip.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>())
        {
            Some(Ok(ip)) => resolve.push(ip),
            _ => return usage(format!("--resolve `{r}` must be host:ip")),
        }
    }
    let (policy, detector) = match app::load_policy(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sima: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let geo = match app::load_geo(&config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sima: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let inspector =
        std::sync::Arc::new(sima::inspect::Inspector::new(std::sync::Arc::new(detector)));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sima: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let client = args.client.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let creds = args.user.as_deref().map(|u| match u.split_once(':') {
        Some((u, p)) => (u.to_owned(), p.to_owned()),
        None => (u.to_owned(), String::new()),
    });
    let request = sima::check::CheckRequest {
        method,
        url: args.url.clone(),
        headers,
        body,
        resolve,
        client,
        creds,
        assume_country: None,
    };
    let result = rt.block_on(async {
        let resolver = sima::resolve::Resolver::new(&config.resolver)?;
        sima::check::explain(&policy, &geo, &inspector, &resolver, &request)
            .await
            .map_err(|e| match e {
                sima::check::CheckError::Resolve(r) => r,
                sima::check::CheckError::Auth(a) => sima::resolve::ResolveError::Failed {
                    name: args.url.clone(),
                    detail: a.to_string(),
                },
                other => sima::resolve::ResolveError::Failed {
                    name: args.url.clone(),
                    detail: other.to_string(),
                },
            })
    });
    match result {
        Ok(ex) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&ex).unwrap_or_default());
            } else {
                print!("{}", ex.render());
            }
            if ex.verdict == "deny" {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("sima check: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

fn audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { paths } => {
            match sima::audit::verify(&paths) {
                Ok(r) => {
                    match &r.broken {
                        None => {
                            println!(
                        "ok: {} records in {} files, seq {}..{}, chain intact{}; last hash {}",
                        r.records,
                        r.files,
                        r.first_seq.map_or_else(|| "-".into(), |s| s.to_string()),
                        r.last_seq.map_or_else(|| "-".into(), |s| s.to_string()),
                        if r.starts_at_genesis { " from the first record" } else { " (older files rotated away)" },
                        r.last_hash.as_deref().unwrap_or("-"),
                    );
                            ExitCode::SUCCESS
                        }
                        Some(b) => {
                            println!(
                                "broken: {}:{}: {}: {}",
                                b.file.display(),
                                b.line,
                                b.kind,
                                b.detail
                            );
                            ExitCode::from(1)
                        }
                    }
                }
                Err(e) => {
                    eprintln!("sima audit verify: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
        AuditCommand::Summary { paths, since, json } => {
            let since = match since.as_deref().map(sima::config::parse_duration) {
                None => None,
                Some(Some(d)) => Some(d),
                Some(None) => {
                    eprintln!("sima audit summary: --since takes a duration like 24h or 7d");
                    return ExitCode::from(EX_USAGE);
                }
            };
            match sima::audit::summary(&paths, since) {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", s.render_table());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sima audit summary: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            }
        }
    }
}

fn policy_sources(files: &[String]) -> Result<Vec<sima::policy::PolicySource>, ExitCode> {
    let mut out = Vec::new();
    for f in files {
        if let Some(name) = f.strip_prefix("pack:") {
            match app::PACKS.iter().find(|(n, _)| *n == name) {
                Some((n, text)) => out.push(sima::policy::PolicySource {
                    origin: format!("embedded:policies/{n}.yaml"),
                    text: (*text).to_owned(),
                }),
                None => {
                    eprintln!("sima policy: unknown pack `{name}`; try `sima policy show`");
                    return Err(ExitCode::from(EX_USAGE));
                }
            }
            continue;
        }
        match std::fs::read_to_string(f) {
            Ok(text) => out.push(sima::policy::PolicySource {
                origin: f.clone(),
                text,
            }),
            Err(e) => {
                eprintln!("sima policy: cannot read {f}: {e}");
                return Err(ExitCode::from(EX_USAGE));
            }
        }
    }
    Ok(out)
}

fn policy(command: PolicyCommand) -> ExitCode {
    let today = sima::policy::today();
    match command {
        PolicyCommand::Schema => {
            print!("{}", sima::policy::model::json_schema());
            ExitCode::SUCCESS
        }
        PolicyCommand::Show { name: None } => {
            for (n, text) in app::PACKS {
                let desc = text
                    .lines()
                    .find_map(|l| l.strip_prefix("description: "))
                    .unwrap_or("");
                println!("{n:<18} {desc}");
            }
            ExitCode::SUCCESS
        }
        PolicyCommand::Show { name: Some(n) } => match app::PACKS.iter().find(|(p, _)| *p == n) {
            Some((_, text)) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("sima policy show: unknown pack `{n}`");
                ExitCode::from(EX_USAGE)
            }
        },
        PolicyCommand::Lint { files, strict } => {
            let sources = match policy_sources(&files) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let diags = sima::policy::lint::lint(&sources, &today);
            let (mut errors, mut warnings) = (0, 0);
            for d in &diags {
                let sev = match d.severity {
                    sima::policy::lint::Severity::Error => {
                        errors += 1;
                        "error"
                    }
                    sima::policy::lint::Severity::Warning => {
                        warnings += 1;
                        "warning"
                    }
                };
                match d.line {
                    Some(l) => println!("{}:{l}: {sev}: {}", d.file, d.message),
                    None => println!("{}: {sev}: {}", d.file, d.message),
                }
            }
            println!(
                "{} file(s): {errors} error(s), {warnings} warning(s)",
                sources.len()
            );
            if errors > 0 {
                ExitCode::from(2)
            } else if strict && warnings > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        PolicyCommand::Test { files } => {
            let sources = match policy_sources(&files) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sima: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            };
            let results = rt.block_on(sima::check::run_policy_tests(&sources, &today));
            let mut failed = 0;
            for r in &results {
                if r.passed {
                    println!("PASS {} :: {}", r.file, r.name);
                } else {
                    failed += 1;
                    println!("FAIL {} :: {}", r.file, r.name);
                    println!("     - expected: {}", r.expected);
                    println!("     + got:      {}", r.got);
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            if failed > 0 || results.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
