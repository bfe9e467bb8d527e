#!/usr/bin/env bash
# Builds the production binary with profile-guided optimisation (PGO): an instrumented
# build runs a training load (examples/pgo_train.rs: forward and route GETs, typical
# headers, uploads, JSON, blocked requests; loopback only), and the final build is
# optimised with the profile it wrote. Same source, same behaviour; the request path is
# laid out and inlined for the traffic it serves (README, "Benchmarks").
#
# Usage: scripts/build-pgo.sh [--prune] [OUT]   (default OUT: target/pgo/sima)
#   --prune  remove each intermediate build once it has served (about 2 GB less at peak;
#            the next run builds both from scratch)
# Env: PGO_SCALE (multiplies the training requests; default 1), LLVM_PROFDATA (the
# llvm-profdata matching rustc's LLVM; found in the toolchain's llvm-tools otherwise).
# Needs: rustup component add llvm-tools (or llvm-profdata of rustc's LLVM major version).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PRUNE=0
if [[ "${1:-}" == --prune ]]; then PRUNE=1; shift; fi
OUT="${1:-$REPO/target/pgo/sima}"
WORK="$REPO/target/pgo"
SCALE="${PGO_SCALE:-1}"
die() { echo "build-pgo.sh: $*" >&2; exit 1; }
step() { echo "== $(date +%H:%M:%S) $*" >&2; }

find_profdata() {
  if [[ -n "${LLVM_PROFDATA:-}" ]]; then echo "$LLVM_PROFDATA"; return; fi
  local host sysroot major
  host="$(rustc -vV | sed -n 's/^host: //p')"
  sysroot="$(rustc --print sysroot)"
  if [[ -x "$sysroot/lib/rustlib/$host/bin/llvm-profdata" ]]; then
    echo "$sysroot/lib/rustlib/$host/bin/llvm-profdata"; return
  fi
  major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
  if command -v "llvm-profdata-$major" >/dev/null; then command -v "llvm-profdata-$major"; return; fi
  die "no llvm-profdata for rustc's LLVM $major: run 'rustup component add llvm-tools' (or apt-get install llvm-$major), or set LLVM_PROFDATA"
}

cd "$REPO"
PROFDATA="$(find_profdata)"
rm -rf "$WORK/profiles" "$WORK/sima.profdata"
mkdir -p "$WORK/profiles" "$(dirname "$OUT")"

step "1/4 building the training load (cargo build --example pgo_train)"
cargo build --locked --example pgo_train

step "2/4 building an instrumented Sima (target/pgo/gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/profiles" \
  cargo build --locked --release --bin sima --target-dir "$WORK/gen"

# Loopback only by construction; inside a private network namespace where one can be made
# (not in most container builds), so that not even a broken build can reach another host.
# There a public address (as bench/run.sh --public-upstream) on the namespace's loopback
# lets Sima locate an upstream through its country database, as in production.
PUBLIC_ADDR=8.8.8.8
isolated() {
  local ns
  if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --net --map-root-user); fi
  if command -v unshare >/dev/null && command -v ip >/dev/null && "${ns[@]}" -- true 2>/dev/null; then
    # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
    "${ns[@]}" -- bash -c 'ip link set lo up && ip addr add "$0/32" dev lo && exec "$@"' \
      "$PUBLIC_ADDR" env PGO_PUBLIC_ADDR="$PUBLIC_ADDR" "$@"
  else
    echo "note: no private network namespace here; the load runs on 127.0.0.1 only" >&2
    "$@"
  fi
}

step "3/4 training: about 80,000 requests x $SCALE on loopback"
isolated "$REPO/target/debug/examples/pgo_train" "$WORK/gen/release/sima" "$SCALE"
compgen -G "$WORK/profiles/*.profraw" >/dev/null || die "the training run wrote no profile"
"$PROFDATA" merge -o "$WORK/sima.profdata" "$WORK/profiles"
if ((PRUNE)); then rm -rf "$WORK/gen" "$WORK/profiles"; fi

step "4/4 building the optimised Sima (target/pgo/use)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/sima.profdata" \
  cargo build --locked --release --bin sima --target-dir "$WORK/use"
# The optimised binary answers the same load with the same statuses before it is installed.
step "check: the optimised Sima under a short load"
isolated "$REPO/target/debug/examples/pgo_train" "$WORK/use/release/sima" 0.05
install -m 0755 "$WORK/use/release/sima" "$OUT"
if ((PRUNE)); then rm -rf "$WORK/use"; fi
step "done: $OUT ($("$OUT" --version))"
