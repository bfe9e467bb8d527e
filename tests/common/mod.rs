//! End-to-end harness: a real Sima on loopback, recording upstreams on 127.0.0.2/127.0.0.3
//! (and [::1]), a fake DNS server, and clients. Refuses to run outside a loopback-only
//! network namespace, so a broken guard can never send traffic off the machine.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub use sima::app::{self, Running};
pub use sima::config::Config;

/// Every test awaits through this: nothing hangs forever.
pub const TEST_DEADLINE: Duration = Duration::from_secs(20);

static NETNS_CHECK: Once = Once::new();

/// Panics unless the only network interface is loopback (`unshare -n`).
pub fn require_private_netns() {
    NETNS_CHECK.call_once(|| {
        // /proc/net/dev is per network namespace (sysfs may still show the host's).
        let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
        let ifaces: Vec<String> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_owned())
            .collect();
        assert!(
            ifaces.iter().all(|i| i == "lo"),
            "end-to-end tests must run in a loopback-only network namespace; use scripts/test.sh (found interfaces {ifaces:?})"
        );
    });
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// Trailer fields after the body, if any came.
    pub trailers: Option<http::HeaderMap>,
}

/// A real HTTP server that records what it receives and answers `200 hello from NAME`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    pub name: String,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(
    name: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(b) => {
            let trailers = b.trailers().cloned();
            (b.to_bytes().to_vec(), trailers)
        }
        Err(_) => (b"<<body aborted>>".to_vec(), None),
    };
    seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
        trailers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("hello from {name}"))));
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    resp.headers_mut()
        .insert("connection", "x-upstream-hop".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream-hop", "secret".parse().unwrap());
    Ok(resp)
}

/// Starts a recording upstream on `ip`, plain HTTP/1.1 + h2c.
pub async fn upstream(ip: &str, name: &str) -> Upstream {
    upstream_with_tls(ip, name, None).await
}

/// Starts a recording upstream, optionally serving TLS with `tls`.
pub async fn upstream_with_tls(
    ip: &str,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Upstream {
    require_private_netns();
    let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, name2, accepted2) = (seen.clone(), name.to_owned(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (seen, name) = (seen2.clone(), name2.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| record(name.clone(), seen.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        seen,
        name: name.to_owned(),
        accepted,
    }
}

/// A test CA and a server config with a leaf for some names.
pub struct TestPki {
    pub ca_pem_path: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

/// Creates a CA (written as PEM into `dir`) and a leaf for `names` signed by it.
pub fn test_pki(dir: &Path, names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sima test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let ca_pem_path = dir.join("test-ca.pem");
    std::fs::write(&ca_pem_path, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TestPki {
        ca_pem_path,
        server: Arc::new(server),
    }
}

/// A fresh folder for one Sima's audit log (kept for inspection after the test).
pub fn audit_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "sima-test-audit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Config text with ephemeral listeners and a private audit folder prepended (unless the
/// text brings its own `audit:`).
pub fn config(extra: &str) -> Config {
    let audit = if extra.contains("audit:") {
        String::new()
    } else {
        format!("audit:\n  dir: {}\n", audit_dir().display())
    };
    let yaml = format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{audit}{extra}");
    Config::from_yaml(&yaml, "<test>", Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Writes `policy` to a file in `dir` and returns the config line for it.
pub fn policy_file(dir: &Path, policy: &str) -> String {
    let p = dir.join("policy.yaml");
    std::fs::write(&p, policy).unwrap();
    format!("policy: {}\n", p.display())
}

/// 127.0.0.2 (and 127.0.0.1) are declared Indian, 127.0.0.3 and ::1 American.
pub const GEO_OVERRIDES: &str = "geo:\n  overrides:\n    - { cidr: 127.0.0.2/32, country: IN }\n    - { cidr: 127.0.0.3/32, country: US }\n    - { cidr: '::1/128', country: US }\n    - { cidr: 127.0.0.1/32, country: IN }\n";

/// Blocks every US destination; allows the rest.
pub const NO_US_POLICY: &str = "version: 1\nname: no-us\nhome: [IN]\nrules:\n  - id: no-us\n    when: { countries: [US] }\n    action: block\n    reason: US destinations are not allowed\n    citation: Test rule 1\ndefault: allow\n";

/// Starts Sima in-process.
pub async fn start(config: Config) -> Running {
    require_private_netns();
    app::start(config)
        .await
        .unwrap_or_else(|e| panic!("sima failed to start: {e}"))
}

/// Sends one request over a fresh HTTP/1.1 connection to `proxy`.
pub async fn send(
    proxy: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    tokio::time::timeout(TEST_DEADLINE, async move {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        (parts.status, parts.headers, body)
    })
    .await
    .expect("request timed out")
}

/// Sends a request with any body (e.g. a stream) over a fresh HTTP/1.1 connection and
/// returns the response head with its body still to be read.
pub async fn send_streaming<B>(proxy: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tokio::time::timeout(TEST_DEADLINE, sender.send_request(req))
        .await
        .expect("request timed out")
        .unwrap()
}

/// A request body streamed from `bytes` in `chunk`-sized frames.
pub type Frames = http_body_util::StreamBody<
    futures_util::stream::Iter<
        std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
    >,
>;

/// Streams `bytes` as a body of `chunk`-sized frames (a chunked upload).
pub fn chunked_body(bytes: &[u8], chunk: usize) -> Frames {
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = bytes
        .chunks(chunk)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// GET `url` (absolute-form) through `proxy`.
pub async fn get(proxy: SocketAddr, url: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    send(proxy, req).await
}

/// Sends `request` as written on a new connection to `addr` and reads until the server
/// closes it (send `Connection: close`).
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TEST_DEADLINE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a JSON body.
/// Reads from `s` up to and including `end`, byte by byte so that nothing after it (a
/// tunnel's first bytes, a frame) is consumed.
pub async fn read_to(s: &mut TcpStream, end: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    while !got.ends_with(end) {
        let mut b = [0u8; 1];
        tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut b))
            .await
            .expect("the proxy sent nothing more")
            .unwrap();
        got.push(b[0]);
        assert!(got.len() < 8192, "{}", String::from_utf8_lossy(&got));
    }
    String::from_utf8_lossy(&got).into_owned()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Runs curl with `args`; returns (exit ok, stdout, stderr).
pub async fn curl(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "15"])
            .args(&args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .expect("curl is installed (apt-get install curl)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// What the fake DNS server does.
#[derive(Clone, Copy)]
pub enum DnsMode {
    /// Answer A queries for the configured name, NXDOMAIN for others.
    Answer,
    /// SERVFAIL everything.
    ServFail,
    /// Never answer.
    Silent,
}

/// A UDP DNS server on 127.0.0.1 answering `name` with `ip`.
pub async fn fake_dns(mode: DnsMode, name: &'static str, ip: [u8; 4]) -> SocketAddr {
    fake_dns_with_ttl(mode, name, ip, 60).await.0
}

/// As [`fake_dns`], with the A record's TTL, and a count of the A queries it received.
pub async fn fake_dns_with_ttl(
    mode: DnsMode,
    name: &'static str,
    ip: [u8; 4],
    ttl: u32,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::{rdata::A, RData, Record, RecordType};
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let a_queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = a_queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id());
            r.set_message_type(MessageType::Response);
            r.set_recursion_available(true);
            r.add_queries(q.queries().to_vec());
            match mode {
                DnsMode::Silent => continue,
                DnsMode::ServFail => {
                    r.set_response_code(ResponseCode::ServFail);
                }
                DnsMode::Answer => {
                    for query in q.queries() {
                        let qn = query.name().to_ascii();
                        if qn.trim_end_matches('.') != name {
                            r.set_response_code(ResponseCode::NXDomain);
                        } else if query.query_type() == RecordType::A {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let rdata = RData::A(A::from(std::net::Ipv4Addr::from(ip)));
                            r.add_answer(Record::from_rdata(query.name().clone(), ttl, rdata));
                        }
                    }
                }
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, a_queries)
}
