#!/usr/bin/env bash
# Builds the test binaries with network access, then runs the whole suite inside a private
# network namespace that has only loopback: no test can reach another host, even when the
# code under test is broken. Extra arguments go to cargo nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --all-targets
cargo nextest run --locked --no-run

if [ "$(id -u)" = 0 ]; then ns=(unshare --net); else ns=(unshare --net --map-root-user); fi
"${ns[@]}" -- bash -c 'ip link set lo up && exec cargo nextest run --locked --offline --no-fail-fast "$@"' bash "$@"

# A real Prometheus scraping a real Sima (skipped, with a note, where prometheus is absent).
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  "${ns[@]}" -- bash -c 'ip link set lo up && exec scripts/prometheus-e2e.sh'
else
  echo "note: prometheus/promtool not installed; skipped scripts/prometheus-e2e.sh (apt-get install prometheus)"
fi
