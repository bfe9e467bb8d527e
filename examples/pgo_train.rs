//! The training load of `scripts/build-pgo.sh`: drives an instrumented Sima binary with the
//! traffic it is tuned for, so the profile-guided build lays out and inlines the request
//! path that production runs, not start-up or error paths.
//!
//! It starts a recording-free upstream on 127.0.0.1, writes a config that declares loopback
//! foreign (US) so every request is geolocated, judged and fully inspected (the benchmark's
//! set-up), starts Sima, and sends over 32 keep-alive connections: forward GETs (to an
//! address, and to host names answered by a DNS server of its own), route GETs to an HTTP
//! and to an HTTPS upstream (its own test CA), GETs inside CONNECT tunnels (plain HTTP,
//! which Sima reads, and TLS, which it splices), GETs with
//! typical client headers, 64 KiB uploads, 64 KiB JSON order lists (also in Hindi), emails
//! (multipart with a quoted-printable part, and base64 in a JSON `raw` field), and
//! requests carrying an Aadhaar number (also in Devanagari digits) or an email address (451). With `PGO_PUBLIC_ADDR` set (by
//! `scripts/build-pgo.sh`, inside a private network namespace that has that public address
//! on its loopback), forward GETs also go to that address, which Sima locates through its
//! country database; `sima geo lookup` over a few thousand public addresses trains the
//! database reader everywhere. Every answer's status is checked: a binary that answers
//! wrongly fails the build instead of training it. Sima is stopped with SIGTERM, so its
//! profile is written on exit.
//!
//! Usage: `pgo_train SIMA_BINARY [SCALE]` (SCALE multiplies the request counts; default 1,
//! about 80,000 requests).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Concurrent client connections, as in `bench/run.sh`.
const CONNECTIONS: usize = 32;
/// Longest wait for any one answer, and for Sima to start or stop.
const DEADLINE: Duration = Duration::from_secs(30);
/// Host names under this suffix resolve to 127.0.0.1 through the training DNS server.
const DNS_SUFFIX: &str = ".train.example";

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sima) = args.first() else {
        eprintln!("usage: pgo_train SIMA_BINARY [SCALE]");
        std::process::exit(2);
    };
    let scale = match args.get(1).map(|s| s.parse::<f64>()) {
        None => 1.0,
        Some(Ok(s)) if s > 0.0 && s <= 100.0 => s,
        Some(_) => {
            eprintln!("pgo_train: SCALE must be a number in (0, 100]");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgo_train: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(train(Path::new(sima), scale)) {
        eprintln!("pgo_train: {e}");
        std::process::exit(1);
    }
}

/// One kind of request and the status Sima must answer it with.
struct Load {
    name: &'static str,
    count: usize,
    expect: StatusCode,
    make: Box<dyn Fn() -> Request<Full<Bytes>> + Send + Sync>,
    /// How each connection reaches the upstream.
    via: Via,
}

/// How a load's connections are opened.
#[derive(Clone)]
enum Via {
    /// Requests to Sima itself.
    Proxy,
    /// Through a CONNECT tunnel to this address, opened per connection.
    Tunnel(SocketAddr),
    /// TLS to the HTTPS upstream inside a CONNECT tunnel: spliced, not read.
    TlsTunnel(SocketAddr, std::sync::Arc<rustls::ClientConfig>),
}

/// A client connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn train(sima: &Path, scale: f64) -> Result<(), Failure> {
    let dir = tempfile::tempdir()?;
    let upstream = start_upstream(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    // Only where the caller has put the address on a private namespace's loopback.
    let public = match std::env::var("PGO_PUBLIC_ADDR") {
        Ok(a) => Some(start_upstream(a.parse()?).await?),
        Err(_) => None,
    };
    let dns = start_dns().await?;
    let (tls, ca) = start_tls_upstream(dir.path()).await?;
    let listen = free_port()?;
    let admin = free_port()?;
    write_config(dir.path(), listen, admin, upstream, dns, tls)?;
    geo_lookups(sima, dir.path(), scale)?;

    let log = std::fs::File::create(dir.path().join("sima.log"))?;
    let child = Command::new(sima)
        .args(["run", "--config"])
        .arg(dir.path().join("sima.yaml"))
        .env("SIMA_WORKER_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", sima.display()))?;
    let mut sima_proc = Stopper(Some(child));
    if let Err(e) = wait_ready(admin).await {
        let log = std::fs::read_to_string(dir.path().join("sima.log")).unwrap_or_default();
        return Err(format!("{e}\n{log}").into());
    }

    let n = |base: f64| ((base * scale) as usize).max(CONNECTIONS);
    for load in loads(listen, upstream, public, (tls, tls_client(ca)?), n) {
        let started = Instant::now();
        run_load(listen, &load).await?;
        eprintln!(
            "pgo_train: {:>6} x {:<26} {:>5.1} s",
            load.count,
            load.name,
            started.elapsed().as_secs_f64()
        );
    }
    sima_proc.stop()?;
    Ok(())
}

fn loads(
    listen: SocketAddr,
    upstream: SocketAddr,
    public: Option<SocketAddr>,
    (tls, tls_client): (SocketAddr, std::sync::Arc<rustls::ClientConfig>),
    n: impl Fn(f64) -> usize,
) -> Vec<Load> {
    let forward = format!("http://{upstream}/1k.bin");
    let host = upstream.to_string();
    let route_host = listen.to_string();
    let aadhaar = (0..10)
        .map(|d| format!("98765432101{d}"))
        .find(|s| sima::inspect::detect::Validator::Verhoeff.check(s))
        .unwrap_or_default();
    let json = Bytes::from(order_list(64 * 1024));
    let octets = Bytes::from(vec![b'b'; 64 * 1024]);
    let mut json_leak = order_list(8 * 1024).into_bytes();
    json_leak.splice(
        1..1,
        br#""contact":"asha.verma@example.in","#.iter().copied(),
    );
    let json_leak = Bytes::from(json_leak);
    // The same list as a Hindi storefront sends it, clean and with an Aadhaar number in
    // Devanagari digits (451).
    let hindi = order_list(32 * 1024)
        .replace("Cotton kurta, indigo", "सूती कुर्ता, नील रंग")
        .replace("Pune", "पुणे")
        .replace("Mumbai", "मुंबई");
    let devanagari: String = aadhaar
        .chars()
        .map(|c| {
            c.to_digit(10)
                .and_then(|d| char::from_u32(0x966 + d))
                .unwrap_or(c)
        })
        .collect();
    let hindi_leak = Bytes::from(hindi.replacen(
        r#""status""#,
        &format!(r#""aadhaar":"{devanagari}","status""#),
        1,
    ));
    let hindi = Bytes::from(hindi);
    // Emails as mail APIs take them: a multipart message with a quoted-printable text
    // part, and the same message base64url-encoded in a JSON `raw` field (both clean).
    let letter = "Dear customer, your order has shipped and will reach you on Friday. \
                  Track it from the app; reply to this mail for help.\r\n"
        .repeat(24);
    let email = format!(
        "--m\r\nContent-Type: multipart/alternative;\r\n boundary=\"a\"\r\n\r\n\
         --a\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--a--\r\n--m--\r\n",
        letter.replace("Friday. ", "Friday.=\r\n ")
    );
    let raw_email = {
        use base64::Engine as _;
        let message = format!(
            "MIME-Version: 1.0\r\nSubject: Your order\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(&letter)
        );
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message);
        Bytes::from(format!(r#"{{"raw":"{raw}"}}"#))
    };
    let email = Bytes::from(email);

    let get = move |uri: String, host: String| {
        move || {
            Request::get(uri.as_str())
                .header("host", host.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        }
    };
    let post = move |uri: String, host: String, ctype: &'static str, body: Bytes| {
        move || {
            Request::post(uri.as_str())
                .header("host", host.as_str())
                .header("content-type", ctype)
                .body(Full::new(body.clone()))
                .unwrap_or_default()
        }
    };
    let typical = {
        let (uri, host) = (forward.clone(), host.clone());
        move || {
            Request::get(uri.as_str())
                .header("host", host.as_str())
                .header("user-agent", "okhttp/4.12.0 payments-service/2.31.4 (build 20261120.3)")
                .header("accept", "application/json, text/plain, */*")
                .header("accept-encoding", "gzip, deflate, br")
                .header("authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
                .header("x-request-id", "3f6c1d2e-8b4a-4c2f-9e1d-7a5b6c4d3e2f")
                .header("x-client-version", "2.31.4")
                .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        }
    };
    let load =
        |name, count, expect, make: Box<dyn Fn() -> Request<Full<Bytes>> + Send + Sync>| Load {
            name,
            count,
            expect,
            make,
            via: Via::Proxy,
        };
    let post_url = format!("http://{upstream}/post");
    // Eight names, so lookups in Sima's answer cache are not all of one entry.
    let named = {
        let port = upstream.port();
        let next = std::sync::atomic::AtomicUsize::new(0);
        move || {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 8;
            let host = format!("api{i}{DNS_SUFFIX}:{port}");
            Request::get(format!("http://{host}/1k.bin"))
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap_or_default()
        }
    };
    let mut loads = vec![
        load(
            "GET forward",
            n(24_000.0),
            StatusCode::OK,
            Box::new(get(forward.clone(), host.clone())),
        ),
        load(
            "GET route",
            n(16_000.0),
            StatusCode::OK,
            Box::new(get("/1k.bin".into(), route_host)),
        ),
        load(
            "GET typical headers",
            n(8_000.0),
            StatusCode::OK,
            Box::new(typical),
        ),
        load(
            "POST 64 KiB",
            n(4_000.0),
            StatusCode::OK,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "application/octet-stream",
                octets,
            )),
        ),
        load(
            "POST 64 KiB JSON",
            n(1_500.0),
            StatusCode::OK,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "application/json",
                json,
            )),
        ),
        load(
            "GET with an Aadhaar",
            n(2_000.0),
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            Box::new(get(format!("{forward}?aadhaar={aadhaar}"), host.clone())),
        ),
        load(
            "POST JSON with an email",
            n(1_000.0),
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "application/json",
                json_leak,
            )),
        ),
        load(
            "POST JSON in Hindi",
            n(1_000.0),
            StatusCode::OK,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "application/json",
                hindi,
            )),
        ),
        load(
            "POST Hindi, Devanagari UID",
            n(500.0),
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "application/json",
                hindi_leak,
            )),
        ),
        load(
            "POST multipart email",
            n(1_000.0),
            StatusCode::OK,
            Box::new(post(
                post_url.clone(),
                host.clone(),
                "multipart/mixed; boundary=m",
                email,
            )),
        ),
        load(
            "POST base64 email in JSON",
            n(1_000.0),
            StatusCode::OK,
            Box::new(post(post_url, host, "application/json", raw_email)),
        ),
        load(
            "GET forward by name",
            n(8_000.0),
            StatusCode::OK,
            Box::new(named),
        ),
        load(
            "GET route, HTTPS upstream",
            n(8_000.0),
            StatusCode::OK,
            Box::new(get("/tls/1k.bin".into(), listen.to_string())),
        ),
        Load {
            via: Via::Tunnel(upstream),
            ..load(
                "GET in CONNECT tunnels",
                n(4_000.0),
                StatusCode::OK,
                Box::new(get("/1k.bin".into(), upstream.to_string())),
            )
        },
        Load {
            via: Via::TlsTunnel(tls, tls_client),
            ..load(
                "GET over TLS in tunnels",
                n(4_000.0),
                StatusCode::OK,
                Box::new(get("/1k.bin".into(), format!("tls{DNS_SUFFIX}"))),
            )
        },
    ];
    if let Some(public) = public {
        let uri = format!("http://{public}/1k.bin");
        loads.push(load(
            "GET forward, geo database",
            n(8_000.0),
            StatusCode::OK,
            Box::new(get(uri, public.to_string())),
        ));
    }
    loads
}

/// Sends `load.count` requests over `CONNECTIONS` keep-alive connections.
async fn run_load(listen: SocketAddr, load: &Load) -> Result<(), Failure> {
    let per = load.count.div_ceil(CONNECTIONS);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let reqs: Vec<_> = (0..per).map(|_| (load.make)()).collect();
        let expect = load.expect;
        let via = load.via.clone();
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(listen).await?;
            stream.set_nodelay(true)?;
            let io: Box<dyn Io> = match via {
                Via::Proxy => Box::new(stream),
                Via::Tunnel(to) => {
                    open_tunnel(&mut stream, to).await?;
                    Box::new(stream)
                }
                Via::TlsTunnel(to, config) => {
                    open_tunnel(&mut stream, to).await?;
                    let name = rustls::pki_types::ServerName::try_from(format!("tls{DNS_SUFFIX}"))?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, stream)
                        .await?;
                    Box::new(tls)
                }
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            for req in reqs {
                let resp = tokio::time::timeout(DEADLINE, async {
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                })
                .await
                .map_err(|_| "no answer within 30 s")??;
                if resp != expect {
                    return Err(format!("answered {resp}, expected {expect}").into());
                }
                if expect != StatusCode::OK {
                    // Sima closes the connection after a block.
                    let stream = TcpStream::connect(listen).await?;
                    let (s, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    sender = s;
                }
            }
            Ok::<_, Failure>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| format!("{}: {e}", load.name))?;
    }
    Ok(())
}

/// Sends `CONNECT to` on `stream` and reads Sima's answer: 200, or an error.
async fn open_tunnel(stream: &mut TcpStream, to: SocketAddr) -> Result<(), Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .map_err(|_| "no answer to CONNECT within 30 s")??;
        if n == 0 || head.len() > 8192 {
            return Err("CONNECT: connection closed before an answer".into());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!("CONNECT answered {}", String::from_utf8_lossy(line)).into());
    }
    Ok(())
}

/// What every upstream answers: 1 KiB for a GET, "ok" once a body is read.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    static PAGE: [u8; 1024] = [b'a'; 1024];
    let body = if req.method() == hyper::Method::GET {
        Bytes::from_static(&PAGE)
    } else {
        req.into_body().collect().await?;
        Bytes::from_static(b"ok\n")
    };
    Ok(Response::new(Full::new(body)))
}

/// Accepts connections on `listener` for good, each served by `serve` in a task of its own.
fn accept_each<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    });
}

/// An HTTP/1.1 upstream on `ip` (a loopback address).
async fn start_upstream(ip: IpAddr) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    accept_each(listener, |stream| async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
            .await;
    });
    Ok(addr)
}

/// A TLS client that trusts the training CA and speaks HTTP/1.1.
fn tls_client(
    ca: rustls::pki_types::CertificateDer<'static>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// An HTTPS upstream (HTTP/2 or HTTP/1.1 by ALPN) on 127.0.0.1 for `tls.train.example`,
/// whose CA is written to `dir/ca.pem` for the route's `ca_bundle` and returned.
async fn start_tls_upstream(
    dir: &Path,
) -> Result<(SocketAddr, rustls::pki_types::CertificateDer<'static>), Failure> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Sima training CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec![format!("tls{DNS_SUFFIX}")])?
        .signed_by(&leaf_key, &ca, &ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let ca_der = ca.der().clone();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    accept_each(listener, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer))
                .await;
        }
    });
    Ok((addr, ca_der))
}

/// A loopback port free at the time of asking.
fn free_port() -> Result<SocketAddr, Failure> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn write_config(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    dns: SocketAddr,
    tls: SocketAddr,
) -> Result<(), Failure> {
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "version: 1\nname: pgo-india-strict\nhome: [IN]\nrules:\n  - id: personal-data-stays-in-india\n    when: { countries: [foreign, unknown], data: any }\n    action: block\ndefault: allow\n",
    )?;
    std::fs::write(
        dir.join("sima.yaml"),
        format!(
            "listen: {listen}\nadmin_listen: {admin}\npolicy: {}\naudit:\n  dir: {}\nresolver:\n  nameservers: ['{dns}']\ngeo:\n  overrides:\n    - {{ cidr: 127.0.0.0/8, country: US }}\nroutes:\n  - name: train-tls\n    prefix: /tls/\n    upstream: https://tls{DNS_SUFFIX}:{}/\n    ca_bundle: {}\n  - name: train\n    prefix: /\n    upstream: http://{upstream}\nlog_format: json\n",
            policy.display(),
            dir.join("audit").display(),
            tls.port(),
            dir.join("ca.pem").display(),
        ),
    )?;
    Ok(())
}

/// A DNS server on 127.0.0.1: `A 127.0.0.1` (TTL 300) for names under [`DNS_SUFFIX`],
/// no records for other types, NXDOMAIN for other names.
async fn start_dns() -> Result<SocketAddr, Failure> {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::{rdata::A, RData, Record, RecordType};
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(buf.get(..len).unwrap_or_default()) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true)
                .add_queries(q.queries().to_vec());
            for query in q.queries() {
                let name = query.name().to_ascii();
                if !name.trim_end_matches('.').ends_with(DNS_SUFFIX) {
                    r.set_response_code(ResponseCode::NXDomain);
                } else if query.query_type() == RecordType::A {
                    let rdata = RData::A(A::from(Ipv4Addr::LOCALHOST));
                    r.add_answer(Record::from_rdata(query.name().clone(), 300, rdata));
                }
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    Ok(addr)
}

/// `sima geo lookup` over public addresses (each asked twice: a miss, then a recent
/// answer), so the country database's reader is trained where no namespace can carry a
/// public address.
fn geo_lookups(sima: &Path, dir: &Path, scale: f64) -> Result<(), Failure> {
    let count = ((2_000.0 * scale) as usize).max(100);
    let mut x: u32 = 0x9e37_79b9;
    let mut ips = Vec::with_capacity(2 * count);
    while ips.len() < count {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let ip = Ipv4Addr::from(x);
        if ip.octets()[0] >= 1 && ip.octets()[0] < 224 && !ip.is_private() && !ip.is_loopback() {
            ips.push(ip.to_string());
        }
    }
    ips.extend_from_within(..);
    ips.push("2001:4860:4860::8888".into());
    let status = Command::new(sima)
        .args(["geo", "lookup", "--config"])
        .arg(dir.join("sima.yaml"))
        .args(&ips)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("sima geo lookup exited with {status}").into());
    }
    Ok(())
}

async fn wait_ready(admin: SocketAddr) -> Result<(), Failure> {
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if let Ok(stream) = TcpStream::connect(admin).await {
            if let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(conn);
                let req = Request::get("/readyz")
                    .header("host", admin.to_string())
                    .body(Full::new(Bytes::new()))?;
                if let Ok(resp) = sender.send_request(req).await {
                    if resp.status() == StatusCode::OK {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("Sima did not become ready within 30 s".into())
}

/// Stops Sima with SIGTERM (a killed process writes no profile), SIGKILL if dropped early.
struct Stopper(Option<Child>);

impl Stopper {
    fn stop(&mut self) -> Result<(), Failure> {
        let Some(mut child) = self.0.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        // The shell's own `kill`: build images need not carry procps.
        let sent = Command::new("sh")
            .args(["-c", "kill -TERM \"$0\"", &pid])
            .status()?;
        if !sent.success() {
            let _ = child.kill();
            return Err("could not send SIGTERM to Sima".into());
        }
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("Sima exited with {status}").into())
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        Err("Sima did not stop within 30 s of SIGTERM".into())
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// About `size` bytes of an order list as an API sends it (ids, UUIDs, timestamps, prices,
/// pincodes), with no identifier in it: the body of `bench/run.sh`'s json scenario.
fn order_list(size: usize) -> String {
    let mut s = String::from(r#"{"page":1,"per_page":500,"orders":["#);
    let mut x: u64 = 7;
    let mut next = move || {
        // xorshift: reproducible, no dependency
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let cities = [
        "Bengaluru",
        "Mumbai",
        "Pune",
        "Chennai",
        "Hyderabad",
        "Kolkata",
    ];
    let states = [
        "created",
        "paid",
        "packed",
        "shipped",
        "delivered",
        "returned",
    ];
    let mut n = 0;
    while s.len() < size.saturating_sub(300) {
        if n > 0 {
            s.push(',');
        }
        n += 1;
        let r = next();
        let i = (r % 6) as usize;
        s.push_str(&format!(
            r#"{{"id":{},"uuid":"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}","status":"{}","created_at":"2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z","currency":"INR","total":{}.{:02},"shipping":{{"city":"{}","pincode":"{}"}},"items":[{{"sku":"SKU-{}","name":"Cotton kurta, indigo","qty":{},"unit_price":{}.{:02}}}]}}"#,
            1000 + r % 90_000_000,
            next() as u32,
            next() as u16,
            next() % 4096,
            next() % 4096,
            next() % (1 << 48),
            states[i],
            1 + r % 12,
            1 + r % 28,
            r % 24,
            r % 60,
            (r >> 8) % 60,
            r % 1000,
            next() % 50_000,
            r % 100,
            cities[i],
            110_000 + next() % 800_000,
            10_000 + next() % 90_000,
            1 + r % 5,
            next() % 10_000,
            (r >> 16) % 100,
        ));
    }
    s.push_str("]}");
    s
}
