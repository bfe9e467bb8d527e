# shellcheck shell=bash
# Shared by bench/run.sh and bench/instructions.sh (sourced, not run): the Sima set-up and
# the wrk script both measure, so the two stay the same benchmark.
# Both expect SIMA_PORT, SIMA_ADMIN_PORT and UPSTREAM_PORT to be set.

# write_sima_config DIR: DIR/bench-policy.yaml and DIR/sima.yaml. Full inspection on: the
# upstream is foreign (US), so every request's URL, headers and body are scanned under
# india-strict's rule. On loopback it is declared US by geo.overrides; at a public address
# (UPSTREAM_HOST, run.sh --public-upstream) the geo database locates it.
write_sima_config() {
  local dir="$1"
  cat >"$dir/bench-policy.yaml" <<EOF
version: 1
name: bench-india-strict
home: [IN]
rules:
  - id: personal-data-stays-in-india
    when: { countries: [foreign, unknown], data: any }
    action: block
default: allow
EOF
  cat >"$dir/sima.yaml" <<EOF
listen: 127.0.0.1:$SIMA_PORT
admin_listen: 127.0.0.1:$SIMA_ADMIN_PORT
policy: $dir/bench-policy.yaml
audit:
  dir: $dir/audit
geo:
  overrides:
    - { cidr: 127.0.0.0/8, country: US }
routes:
  - name: bench
    prefix: /
    upstream: http://${UPSTREAM_HOST:-127.0.0.1}:${UPSTREAM_PORT:?}
log_format: json
EOF
}

# write_wrk_script FILE: method/path/Host/body/headers from the environment (BENCH_METHOD,
# BENCH_PATH, BENCH_HOST, BENCH_BODY_BYTES or BENCH_BODY_FILE with BENCH_CONTENT_TYPE,
# BENCH_HEADERS=typical); prints one RESULT line.
# For forward-proxy targets the path is an absolute URI, so wrk (which cannot use a proxy)
# sends absolute-form request lines ("GET http://127.0.0.1:18080/1k.bin HTTP/1.1").
write_wrk_script() {
  cat >"$1" <<'EOF'
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
local host = os.getenv("BENCH_HOST")
if host and host ~= "" then wrk.headers["Host"] = host end
local n = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if n > 0 then
  wrk.body = string.rep("b", n)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
-- A body from a file (run.sh's post and json scenarios), with its content type.
local file = os.getenv("BENCH_BODY_FILE")
if file and file ~= "" then
  local f = assert(io.open(file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/octet-stream"
end
-- What a service's HTTP client typically sends besides Host (run.sh's "headers"
-- scenario, instructions.sh --headers typical).
if os.getenv("BENCH_HEADERS") == "typical" then
  wrk.headers["User-Agent"] = "okhttp/4.12.0 payments-service/2.31.4 (build 20261120.3)"
  wrk.headers["Accept"] = "application/json, text/plain, */*"
  wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
  wrk.headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
  wrk.headers["X-Request-Id"] = "3f6c1d2e-8b4a-4c2f-9e1d-7a5b6c4d3e2f"
  wrk.headers["X-Client-Version"] = "2.31.4"
  wrk.headers["Traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
}

# use_public_upstream ADDR SCRIPT ARGS...: runs SCRIPT ARGS again inside a private network
# namespace (needs root), and there puts ADDR on lo and sets UPSTREAM_HOST to it, so that
# Sima geolocates the upstream through its database rather than a geo.overrides entry.
# Refuses to go on where any interface but lo exists: traffic to ADDR must have nowhere to
# go but loopback.
use_public_upstream() {
  local addr="$1" script="$2" name links
  shift 2
  name="$(basename "$script")"
  if [[ -z "${SIMA_BENCH_NETNS:-}" ]]; then
    ((EUID == 0)) || { echo "$name: --public-upstream needs root (a network namespace with an address on lo)" >&2; exit 1; }
    command -v unshare >/dev/null 2>&1 || { echo "$name: --public-upstream needs unshare (util-linux)" >&2; exit 1; }
    exec unshare --net -- env SIMA_BENCH_NETNS=1 "$script" "$@"
  fi
  links="$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
  [[ "$links" == "lo " ]] || { echo "$name: refusing --public-upstream: interfaces other than lo exist ($links)" >&2; exit 1; }
  ip link set lo up || { echo "$name: cannot bring lo up" >&2; exit 1; }
  ip addr add "$addr/32" dev lo || { echo "$name: cannot put $addr on lo" >&2; exit 1; }
  UPSTREAM_HOST="$addr"
}
