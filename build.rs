//! Records the git revision and build date for `sima --version` and `sima_build_info`.
use std::process::Command;

fn main() {
    // A container build has no .git: it passes the revision as SIMA_GIT_SHA.
    println!("cargo:rerun-if-env-changed=SIMA_GIT_SHA");
    let sha = std::env::var("SIMA_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]));
    println!("cargo:rustc-env=SIMA_GIT_SHA={sha}");
    println!(
        "cargo:rustc-env=SIMA_BUILD_DATE={}",
        output("date", &["-u", "+%Y-%m-%d"])
    );
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
