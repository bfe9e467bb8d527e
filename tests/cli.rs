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

#[test]
fn every_shipped_pack_passes_its_own_tests_and_lints_clean() {
    let mut files: Vec<String> = std::fs::read_dir("policies")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let mut args = vec!["policy", "test"];
    args.extend(files.iter().map(String::as_str));
    let o = sima(&args, None);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(" passed, 0 failed") && !t.contains("FAIL"),
        "{t}"
    );
    let mut args = vec!["policy", "lint", "--strict"];
    args.extend(files.iter().map(String::as_str));
    let o = sima(&args, None);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn policy_test_reports_a_failing_expectation_as_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    std::fs::write(&p, "version: 1\nname: p\nrules: []\ndefault: allow\ntests:\n  - name: expects a block\n    request: { url: 'http://x.example/' }\n    destination: { address: 192.0.2.1, country: US }\n    expect: { verdict: deny }\n").unwrap();
    let o = sima(&["policy", "test", p.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("FAIL")
            && t.contains("- expected: deny")
            && t.contains("+ got:      allow (default)"),
        "{t}"
    );
}

#[test]
fn policy_lint_points_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        "version: 1\nname: p\nrules:\n  - id: r\n    when: { data: [AADHAR] }\n    action: block\n",
    )
    .unwrap();
    let o = sima(&["policy", "lint", p.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("error") && t.contains("did you mean `AADHAAR`"),
        "{t}"
    );
}

#[test]
fn every_yaml_example_in_the_policies_readme_compiles() {
    let readme = std::fs::read_to_string("policies/README.md").unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty());
    for (i, b) in blocks.iter().enumerate() {
        let src = sima::policy::PolicySource {
            origin: format!("policies/README.md block {i}"),
            text: (*b).to_owned(),
        };
        let r = sima::policy::load(&[src], "2026-11-26");
        assert!(r.is_ok(), "block {i}: {}", r.err().unwrap());
    }
    // The format example's own tests pass too.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("readme-example.yaml");
    std::fs::write(&p, blocks[blocks.len() - 1]).unwrap();
    let o = sima(&["policy", "test", p.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn the_published_json_schema_is_generated_from_the_types() {
    let o = sima(&["policy", "schema"], None);
    assert!(o.status.success());
    let published = std::fs::read_to_string("policies/schema.json").unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout) == published,
        "policies/schema.json is stale: run `sima policy schema > policies/schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert!(
        v["properties"]["rules"].is_object()
            && v["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "version")
    );
}
