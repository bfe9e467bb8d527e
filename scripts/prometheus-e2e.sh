#!/usr/bin/env bash
# End-to-end metrics check, run inside a loopback-only network namespace (scripts/test.sh
# runs it): `promtool check metrics` on a live scrape of Sima, then a real Prometheus server
# scrapes Sima, a request is blocked, and the server's query API must show it counted.
set -euo pipefail
cd "$(dirname "$0")/.."
SIMA_BIN=${SIMA_BIN:-target/debug/sima}
for t in prometheus promtool curl; do
  command -v "$t" >/dev/null || { echo "prometheus-e2e: $t missing (apt-get install prometheus curl)" >&2; exit 2; }
done
ifaces=$(awk -F: 'NR>2 {gsub(/ /,"",$1); print $1}' /proc/net/dev | grep -vx lo || true)
[ -z "$ifaces" ] || { echo "prometheus-e2e: refusing to run outside a loopback-only namespace (found: $ifaces)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
# shellcheck disable=SC2329  # invoked by the EXIT trap below
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/policy.yaml" <<'YAML'
version: 1
name: prom-e2e
rules:
  - id: no-us
    when: { countries: [US] }
    action: block
default: allow
YAML
cat >"$tmp/sima.yaml" <<YAML
listen: 127.0.0.1:13128
admin_listen: 127.0.0.1:19464
policy: $tmp/policy.yaml
audit: { dir: $tmp/audit }
geo:
  overrides:
    - { cidr: 127.0.0.3/32, country: US }
YAML
# One worker: the single-threaded runtime a one-CPU pod gets, with the audit writer and
# the admin listener sharing it with the proxy.
SIMA_WORKER_THREADS=1 "$SIMA_BIN" run --config "$tmp/sima.yaml" >"$tmp/sima.log" 2>&1 &
pids+=($!)
cat >"$tmp/prometheus.yml" <<'YAML'
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: sima
    static_configs: [{ targets: ['127.0.0.1:19464'] }]
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address=127.0.0.1:19090 >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

wait_for() { # url, what
  for _ in $(seq 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "prometheus-e2e: $2 did not come up" >&2; cat "$tmp"/*.log >&2; exit 1
}
wait_for http://127.0.0.1:19464/readyz "sima"
wait_for http://127.0.0.1:19090/-/ready "prometheus"

echo "== promtool check metrics on a live scrape"
curl -fsS http://127.0.0.1:19464/metrics | promtool check metrics

echo "== a blocked request, counted by a real Prometheus"
code=$(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:13128 http://127.0.0.3:9/blocked)
[ "$code" = 451 ] || { echo "expected 451, got $code" >&2; exit 1; }
q='sum(sima_requests_total{decision="deny",reason="destination_rule"})'
for _ in $(seq 100); do
  v=$(curl -fsS --get http://127.0.0.1:19090/api/v1/query --data-urlencode "query=$q" \
      | sed -n 's/.*"value":\[[^,]*,"\([0-9.]*\)"\].*/\1/p')
  if [ "${v:-0}" = 1 ]; then echo "ok: Prometheus sees the block ($q = $v)"; exit 0; fi
  sleep 0.2
done
echo "prometheus-e2e: the block never showed in Prometheus (last value: ${v:-none})" >&2
exit 1
