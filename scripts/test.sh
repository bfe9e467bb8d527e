#!/usr/bin/env bash
# Builds the test binaries with network access, then runs the whole suite inside a private
# network namespace that has only loopback: no test can reach another host, even when the
# code under test is broken. Extra arguments go to cargo nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --all-targets
cargo nextest run --locked --no-run

if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --net --map-root-user); fi
exec "${ns[@]}" -- bash -c 'ip link set lo up && exec cargo nextest run --locked --offline --no-fail-fast "$@"' bash "$@"
