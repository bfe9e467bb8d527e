//! The `sima` binary's commands, run as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn sima(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sima"))
        .args(args)
        .env_remove("SIMA_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(b) = stdin {
        input.write_all(b).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn version_names_revision_and_date() {
    let o = sima(&["--version"], None);
    assert!(o.status.success());
    let t = text(&o);
    assert!(
        t.starts_with("sima 0.") && t.contains("git ") && t.contains("built 20"),
        "{t}"
    );
}

#[test]
fn geo_lookup_prints_country_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "geo:\n  overrides:\n    - { cidr: 10.20.0.0/16, country: IN }\n",
    )
    .unwrap();
    let o = sima(
        &[
            "geo",
            "lookup",
            "-c",
            cfg.to_str().unwrap(),
            "10.20.1.1",
            "14.139.1.1",
            "[::ffff:14.139.1.1]",
            "192.0.2.1",
        ],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "10.20.1.1 IN override");
    assert_eq!(lines[1], "14.139.1.1 IN database");
    assert_eq!(lines[2], "::ffff:14.139.1.1 IN database");
    assert_eq!(lines[3], "192.0.2.1 unknown database");
    let o = sima(&["geo", "lookup", "not-an-ip"], None);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn check_explains_a_block_without_echoing_the_value() {
    let aadhaar = (0..10)
        .map(|d| format!("98765432101{d}"))
        .find(|s| sima::inspect::detect::Validator::Verhoeff.check(s))
        .unwrap();
    let body = format!(r#"{{"aadhaar":"{aadhaar}"}}"#);
    let args = [
        "check",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--resolve",
        "api.example.com:8.8.8.8",
        "-d",
        "-",
        "http://api.example.com/kyc",
    ];
    let o = sima(&args, Some(body.as_bytes()));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("AADHAAR") && t.contains("personal-data-stays-in-india") && t.contains("US"),
        "{t}"
    );
    assert!(!t.contains(&aadhaar), "check printed the identifier");

    let mut json_args = args.to_vec();
    json_args.insert(1, "--json");
    let o = sima(&json_args, Some(b"{\"note\":\"nothing personal\"}"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["addresses"][0]["country"], "US");
}

#[test]
fn broken_config_exits_78_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:3128\nadmin_listn: 127.0.0.1:9464\n",
    )
    .unwrap();
    let o = sima(&["run", "--config", cfg.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(78));
    let t = text(&o);
    assert!(
        t.contains("bad.yaml") && t.contains("admin_listn") && t.contains("line 2"),
        "{t}"
    );

    let pol = dir.path().join("p.yaml");
    std::fs::write(&pol, "version: 1\nname: p\nrules:\n  - id: r\n    when: { countries: [Narnia] }\n    action: block\n").unwrap();
    std::fs::write(&cfg, format!("policy: {}\n", pol.display())).unwrap();
    let o = sima(
        &["run", "--check-config", "--config", cfg.to_str().unwrap()],
        None,
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(text(&o).contains("Narnia"), "{}", text(&o));
}

#[test]
fn check_config_accepts_the_defaults() {
    let o = sima(&["run", "--check-config"], None);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("policy: ok: india-strict") && t.contains("geo: ok"),
        "{t}"
    );
}
