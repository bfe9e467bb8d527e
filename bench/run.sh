#!/usr/bin/env bash
# Load comparison: Sima vs nginx (reverse proxy) vs squid (forward proxy), all in
# front of the same nginx upstream, on loopback only, driven by wrk.
# See bench/README.md. Run `bench/run.sh --help` for options.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"
# Never let a proxy from the environment redirect our own traffic.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-1}"
ONLY="${ONLY:-direct,sima-forward,sima-route,hyper-floor,nginx,squid}"
SCENARIOS="${SCENARIOS:-get,post}"
SIMA_BIN="${SIMA_BIN:-$REPO/target/release/sima}"
FLOOR_BIN="${FLOOR_BIN:-$REPO/target/release/examples/hyper_floor}"
OUT="${OUT:-$HERE/results/latest.json}"
PROXY_CPU="${PROXY_CPU:-1}"   # core for the proxy under test
LOAD_CPU="${LOAD_CPU:-0}"     # core for wrk and the upstream
UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
NGINX_PORT="${NGINX_PORT:-18081}"
SQUID_PORT="${SQUID_PORT:-13128}"
FLOOR_PORT="${FLOOR_PORT:-18082}"
SIMA_PORT="${SIMA_PORT:-3128}"
SIMA_ADMIN_PORT="${SIMA_ADMIN_PORT:-9464}"
PUBLIC_UPSTREAM="${PUBLIC_UPSTREAM:-0}"
PUBLIC_ADDR="${PUBLIC_ADDR:-8.8.8.8}"
KEEP=0
SYSCALLS="${SYSCALLS:-0}"
ORIG_ARGS=("$@")

usage() {
  cat <<EOF
Usage: bench/run.sh [options]
  -d, --duration D      wrk duration per measured run (default $DURATION; env DURATION)
  -c, --connections N   wrk connections (default $CONNECTIONS; env CONNECTIONS)
  -t, --threads N       wrk threads (default $THREADS; env THREADS)
  -w, --warmup D        unmeasured warm-up run per case, 0 to skip (default $WARMUP; env WARMUP)
  -r, --rounds N        measure every target N times, interleaved (round 1 of all targets,
                        then round 2, ...), and report the median ratio with its range;
                        use 3 or more on a shared machine (default $ROUNDS; env ROUNDS)
      --only LIST       targets, comma-separated, from: direct,sima-forward,sima-route,
                        hyper-floor,nginx,squid ("sima" = both Sima targets; default all;
                        env ONLY). hyper-floor is examples/hyper_floor.rs: hyper and tokio
                        forwarding with none of Sima's work, the least any proxy built on
                        them costs
      --scenarios LIST  from get,post,headers,json (default get,post; env SCENARIOS). headers is
                        GET 1 KiB with seven typical request headers besides Host (user
                        agent, accept, accept-encoding, a JWT bearer token, a request id,
                        a client version, a trace id): what Sima's head scan costs.
                        json is POST of a 64 KiB JSON order list (ids, UUIDs, timestamps,
                        prices, pincodes) with no identifier in it: what Sima's JSON
                        inspection costs, where post's body is one letter repeated
      --sima-bin PATH   Sima binary (default target/release/sima; env SIMA_BIN); built with
                        'cargo build --release' when missing and a Sima target is selected
      --floor-bin PATH  hyper-floor binary (default target/release/examples/hyper_floor;
                        env FLOOR_BIN); built with 'cargo build --release --example
                        hyper_floor' when missing
  -o, --out FILE        JSON results (default bench/results/latest.json; env OUT)
      --public-upstream the upstream listens on a public address ($PUBLIC_ADDR; env
                        PUBLIC_ADDR) inside a private network namespace with only
                        loopback, so Sima locates it through its geo database, as a
                        production destination, not through a geo.overrides entry.
                        Needs root and unshare; the script re-runs itself inside the
                        namespace and refuses to start where any other interface exists
                        (env PUBLIC_UPSTREAM=1)
      --syscalls        also count, with perf (linux-perf; root or perf_event_paranoid <= 1),
                        the proxy's system calls and context switches per request: where
                        its kernel time goes (env SYSCALLS=1). perf's counting costs the
                        proxy a little CPU, the same for every target
      --keep            keep the temporary directory (configs and logs)
Env: PROXY_CPU (1), LOAD_CPU (0), UPSTREAM_PORT (18080), NGINX_PORT (18081),
     FLOOR_PORT (18082), SQUID_PORT (13128), SIMA_PORT (3128), SIMA_ADMIN_PORT (9464).
EOF
}

while (($#)); do
  case "$1" in
    -d|--duration) DURATION="$2"; shift 2 ;;
    -c|--connections) CONNECTIONS="$2"; shift 2 ;;
    -t|--threads) THREADS="$2"; shift 2 ;;
    -w|--warmup) WARMUP="$2"; shift 2 ;;
    -r|--rounds) ROUNDS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --sima-bin) SIMA_BIN="$2"; shift 2 ;;
    --floor-bin) FLOOR_BIN="$2"; shift 2 ;;
    -o|--out) OUT="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --syscalls) SYSCALLS=1; shift ;;
    --public-upstream) PUBLIC_UPSTREAM=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "run.sh: $*" >&2; exit 1; }

# ---- a public upstream address, inside a private network namespace ---------------
UPSTREAM_HOST=127.0.0.1
if ((PUBLIC_UPSTREAM)); then use_public_upstream "$PUBLIC_ADDR" "$0" "${ORIG_ARGS[@]}"; fi
export UPSTREAM_HOST

# ---- parse and check selections ----------------------------------------------
TARGETS=()
IFS=',' read -r -a _only <<<"$ONLY"
for t in "${_only[@]}"; do
  case "$t" in
    sima) TARGETS+=(sima-forward sima-route) ;;
    direct|sima-forward|sima-route|hyper-floor|nginx|squid) TARGETS+=("$t") ;;
    *) die "unknown target '$t' (direct, sima, sima-forward, sima-route, hyper-floor, nginx, squid)" ;;
  esac
done
IFS=',' read -r -a SCEN <<<"$SCENARIOS"
for s in "${SCEN[@]}"; do [[ "$s" == get || "$s" == post || "$s" == headers || "$s" == json ]] || die "unknown scenario '$s' (get, post, headers, json)"; done
want() { local x; for x in "${TARGETS[@]}"; do [[ "$x" == "$1" ]] && return 0; done; return 1; }

to_seconds() { # 10s, 2m, 1h, 10 -> seconds
  [[ "$1" =~ ^([0-9]+)([smh]?)$ ]] || die "bad duration '$1' (use e.g. 10s, 1m)"
  case "${BASH_REMATCH[2]}" in m) echo $((BASH_REMATCH[1] * 60)) ;; h) echo $((BASH_REMATCH[1] * 3600)) ;; *) echo "${BASH_REMATCH[1]}" ;; esac
}
DUR_S="$(to_seconds "$DURATION")"; WARM_S="$(to_seconds "$WARMUP")"
((DUR_S > 0)) || die "duration must be > 0"
[[ "$CONNECTIONS" =~ ^[0-9]+$ && "$THREADS" =~ ^[0-9]+$ ]] || die "connections/threads must be numbers"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "rounds must be a number >= 1"
((CONNECTIONS >= THREADS)) || die "connections must be >= threads"

missing=()
for tool in wrk nginx taskset setsid timeout awk getconf; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((SYSCALLS)); then command -v perf >/dev/null 2>&1 || missing+=(perf); fi
if want squid; then command -v squid >/dev/null 2>&1 || missing+=(squid); fi
if ((${#missing[@]})); then
  echo "run.sh: missing: ${missing[*]}" >&2
  echo "Install them (Debian/Ubuntu): sudo apt-get update && sudo apt-get install -y nginx squid wrk util-linux coreutils" >&2
  exit 2
fi
HAVE_CURL=0; command -v curl >/dev/null 2>&1 && HAVE_CURL=1
PERF_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,context-switches
if ((SYSCALLS)) && ! perf stat -x, -e "$PERF_EVENTS" -- true >/dev/null 2>&1; then
  echo "run.sh: --syscalls: perf cannot count $PERF_EVENTS here (run as root, or lower" \
       "/proc/sys/kernel/perf_event_paranoid, and mount tracefs)" >&2
  exit 2
fi
CORES="$(nproc)"
if ((CORES < 2)) && [[ "$PROXY_CPU" == "$LOAD_CPU" || "$PROXY_CPU" -ge "$CORES" ]]; then
  echo "run.sh: warning: $CORES core(s); the proxy shares a core with wrk (set PROXY_CPU/LOAD_CPU)" >&2
  PROXY_CPU=0
fi
CLK_TCK="$(getconf CLK_TCK)"

if want sima-forward || want sima-route; then
  if [[ ! -x "$SIMA_BIN" ]]; then
    if [[ "$SIMA_BIN" == "$REPO/target/release/sima" ]]; then
      echo "== building Sima (cargo build --release) ..."
      (cd "$REPO" && cargo build --release) || die "cargo build failed; run with --only nginx,squid to skip Sima"
    fi
    [[ -x "$SIMA_BIN" ]] || die "Sima binary '$SIMA_BIN' not found (set SIMA_BIN, or --only nginx,squid)"
  fi
fi
if want hyper-floor && [[ ! -x "$FLOOR_BIN" ]]; then
  if [[ "$FLOOR_BIN" == "$REPO/target/release/examples/hyper_floor" ]]; then
    echo "== building the hyper floor (cargo build --release --example hyper_floor) ..."
    (cd "$REPO" && cargo build --release --example hyper_floor) || die "cargo build failed; leave hyper-floor out of --only"
  fi
  [[ -x "$FLOOR_BIN" ]] || die "hyper floor binary '$FLOOR_BIN' not found (set FLOOR_BIN, or leave hyper-floor out of --only)"
fi

# ---- process management --------------------------------------------------------
TMP="$(mktemp -d /tmp/sima-bench.XXXXXX)"
chmod 755 "$TMP"   # nginx workers and squid drop privileges and must read/write here
PIDS=()            # every server we start is a session/process-group leader
WRK_PID=""         # the running wrk's `timeout` (a process-group leader too)

stop_group() {
  local pid="$1" _
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  if [[ -n "$WRK_PID" ]]; then stop_group "$WRK_PID"; fi
  for pid in "${PIDS[@]}"; do stop_group "$pid"; done
  if ((KEEP)); then echo "temporary files kept in $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

LAST_PID=""
start_server() { # name cpu port log cmd... ; sets LAST_PID, waits until the port accepts
  # (on START_HOST, default 127.0.0.1)
  local name="$1" cpu="$2" port="$3" log="$4" host="${START_HOST:-127.0.0.1}"; shift 4
  if port_busy "$port" "$host"; then die "port $port (for $name) is already in use; pick another via env"; fi
  setsid taskset -c "$cpu" "$@" >"$log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  local _
  for _ in $(seq 300); do
    if port_busy "$port" "$host"; then return 0; fi
    if ! kill -0 "$LAST_PID" 2>/dev/null; then
      echo "run.sh: $name exited during start-up; log $log:" >&2; tail -n 20 "$log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "run.sh: $name did not listen on $host:$port within 30 s; log $log:" >&2; tail -n 20 "$log" >&2
  return 1
}
stop_server() {
  local pid="$1" keep=() p
  stop_group "$pid"
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

tree_pids() { # pid and all its descendants
  local c; echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}
cpu_ticks() { # "user system" (+ reaped children) of a process tree, in clock ticks
  local user=0 sys=0 p s f
  for p in $(tree_pids "$1"); do
    s="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    s="${s##*) }"          # fields after "(comm) "; index 0 is field 3 (state)
    read -r -a f <<<"$s"
    user=$((user + f[11] + f[13])); sys=$((sys + f[12] + f[14]))
  done
  echo "$user $sys"
}

core_busy() { # busy ticks (user+nice+system+irq+softirq+steal) of one core, or of all with "cpu"
  awk -v c="$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# ---- configuration files -----------------------------------------------------
mkdir -p "$TMP/www" "$TMP/upstream" "$TMP/nginx" "$TMP/squid" "$TMP/sima"
head -c 1024 /dev/zero | tr '\0' 'a' >"$TMP/www/1k.bin"
printf 'ok\n' >"$TMP/www/post"   # POST /post: static handler answers 405 -> error_page 200
head -c 65536 /dev/zero | tr '\0' 'b' >"$TMP/post-64k.bin"
# The json scenario's body: 64 KiB of an order list as an API sends it (ids, UUIDs,
# timestamps, prices, pincodes, SKUs), with no identifier in it, so every proxy passes it.
awk 'BEGIN {
  srand(7); n = 0
  split("created paid packed shipped delivered returned", st, " ")
  split("Bengaluru Mumbai Pune Chennai Hyderabad Kolkata", city, " ")
  s = "{\"page\":1,\"per_page\":500,\"orders\":["
  while (length(s) < 65000) {
    if (n++) s = s ","
    r = int(rand() * 6) + 1
    s = s sprintf("{\"id\":%d,\"uuid\":\"%08x-%04x-4%03x-a%03x-%06x%06x\",\"status\":\"%s\",",
      1000 + int(rand() * 9e7), int(rand() * 2^31), int(rand() * 65536), int(rand() * 4096),
      int(rand() * 4096), int(rand() * 2^24), int(rand() * 2^24), st[r])
    s = s sprintf("\"created_at\":\"2024-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"currency\":\"INR\",",
      1 + int(rand() * 12), 1 + int(rand() * 28), int(rand() * 24), int(rand() * 60),
      int(rand() * 60), int(rand() * 1000))
    s = s sprintf("\"total\":%d.%02d,\"shipping\":{\"city\":\"%s\",\"pincode\":\"%d\"},",
      int(rand() * 50000), int(rand() * 100), city[r], 110000 + int(rand() * 800000))
    s = s sprintf("\"items\":[{\"sku\":\"SKU-%d\",\"name\":\"Cotton kurta, indigo\",\"qty\":%d,\"unit_price\":%d.%02d}]}",
      10000 + int(rand() * 90000), 1 + int(rand() * 5), int(rand() * 10000), int(rand() * 100))
  }
  # Padded to 64 KiB exactly, as the body of the post scenario: one byte more or less changes
  # how many TCP segments a request takes on loopback, and with them the kernel time.
  s = s "]}"
  while (length(s) < 65536) s = s " "
  printf "%s", s
}' >"$TMP/post-64k.json"

nginx_common() { # dir
  cat <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  default_type application/octet-stream;
  client_body_temp_path $1/client_body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server_tokens off;
EOF
}
# Upstream: GET serves a 1 KiB static file; POST /post reads (discards) the body, answers "ok".
{ nginx_common "$TMP/upstream"; cat <<EOF
  access_log off;
  sendfile on;
  server {
    listen $UPSTREAM_HOST:$UPSTREAM_PORT backlog=4096;
    root $TMP/www;
    client_max_body_size 1m;
    # Read the whole request body before answering (a plain "return" would answer
    # early and discard the body, which makes squid close the client connection).
    # The mirror module reads the body first; the static handler then refuses
    # POST with 405, which error_page turns into 200 "ok".
    location = /post {
      client_body_buffer_size 128k;
      mirror /_sink;
      mirror_request_body on;
      error_page 405 =200 /_ok;
    }
    location = /_sink { internal; return 204; }
    location = /_ok { internal; return 200 "ok\n"; }
    location / { }
  }
}
EOF
} >"$TMP/upstream/nginx.conf"

{ nginx_common "$TMP/nginx"; cat <<EOF
  access_log $TMP/nginx/access.log combined buffer=64k flush=1s;
  upstream up { server $UPSTREAM_HOST:$UPSTREAM_PORT; keepalive 1024; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    client_max_body_size 1m;
    client_body_buffer_size 128k;   # keep 64 KiB bodies in memory
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$TMP/nginx/nginx.conf"

chown proxy "$TMP/squid" 2>/dev/null || chmod 777 "$TMP/squid"
cat >"$TMP/squid/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID_PORT
workers 1
cache deny all
cache_mem 0 MB
acl bench_clients src 127.0.0.1/32
http_access allow bench_clients
http_access deny all
access_log stdio:$TMP/squid/access.log
cache_log $TMP/squid/cache.log
cache_store_log none
pid_filename $TMP/squid/squid.pid
coredump_dir $TMP/squid
visible_hostname sima-bench
dns_nameservers 127.0.0.1
pinger_enable off
icp_port 0
htcp_port 0
netdb_filename none
logfile_rotate 0
shutdown_lifetime 1 seconds
client_persistent_connections on
server_persistent_connections on
max_filedescriptors 8192
EOF

write_sima_config "$TMP/sima"
write_wrk_script "$TMP/bench.lua"

# ---- measurement ---------------------------------------------------------------
UP="$UPSTREAM_HOST:$UPSTREAM_PORT"
# target -> "port mode" (mode: forward = absolute-form through a proxy, route = origin-form)
target_port() { case "$1" in direct) echo "$UPSTREAM_PORT" ;; sima-*) echo "$SIMA_PORT" ;; hyper-floor) echo "$FLOOR_PORT" ;; nginx) echo "$NGINX_PORT" ;; squid) echo "$SQUID_PORT" ;; esac; }
target_host() { [[ "$1" == direct ]] && echo "$UPSTREAM_HOST" || echo 127.0.0.1; }
target_mode() { case "$1" in sima-forward|squid) echo forward ;; *) echo route ;; esac; }
scen_path() { [[ "$1" == post || "$1" == json ]] && echo /post || echo /1k.bin; }
scen_name() { case "$1" in get) echo "GET 1KiB" ;; headers) echo "GET 1KiB+h" ;; json) echo "POST JSON" ;; *) echo "POST 64KiB" ;; esac; }
scen_body() { case "$1" in post) echo "$TMP/post-64k.bin" ;; json) echo "$TMP/post-64k.json" ;; esac; }
scen_type() { [[ "$1" == json ]] && echo application/json || echo application/octet-stream; }

sanity() { # target scenario -> 0 if a single request through it works
  ((HAVE_CURL)) || return 0
  local port mode path url args=() out want_size=3
  port="$(target_port "$1")"; mode="$(target_mode "$1")"; path="$(scen_path "$2")"
  if [[ "$mode" == forward ]]; then args=(-x "http://127.0.0.1:$port"); url="http://$UP$path"
  else args=(--noproxy '*'); url="http://$(target_host "$1"):$port$path"; fi
  if [[ -n "$(scen_body "$2")" ]]; then args+=(--data-binary "@$(scen_body "$2")" -H "Content-Type: $(scen_type "$2")"); else want_size=1024; fi
  out="$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 "${args[@]}" "$url" 2>&1)" || true
  [[ "$out" == "200 $want_size" ]] && return 0
  echo "run.sh: $1/$2 sanity request to $url failed: '$out' (want '200 $want_size')" >&2
  return 1
}

run_wrk() { # target scenario duration log
  local port mode path host="" body
  port="$(target_port "$1")"; mode="$(target_mode "$1")"; path="$(scen_path "$2")"
  if [[ "$mode" == forward ]]; then path="http://$UP$path"; host="$UP"; fi
  body="$(scen_body "$2")"
  # In the background plus `wait`, so that INT/TERM reach our trap at once
  # (`timeout` puts itself and wrk in their own process group: WRK_PID).
  BENCH_METHOD="$([[ -n "$body" ]] && echo POST || echo GET)" BENCH_PATH="$path" BENCH_HOST="$host" \
  BENCH_HEADERS="$([[ "$2" == headers ]] && echo typical || echo host)" \
  BENCH_BODY_FILE="$body" BENCH_CONTENT_TYPE="$(scen_type "$2")" timeout "$(($(to_seconds "$3") + 60))" \
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --timeout 10s \
    -s "$TMP/bench.lua" "http://$(target_host "$1"):$port/" >"$4" 2>&1 </dev/null &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return "$rc"
}

ROWS=()      # "round scenario target requests duration_us p50_us p99_us errors cpu_ticks(or -) other user_ticks(or -)
             #  syscalls epoll_waits context_switches (each or -)"
ROUND=1
FAILED=()
measure() { # target scenario proxy_pid(or "")
  local t="$1" s="$2" pid="$3" log="$TMP/wrk-$1-$2.log" before="0 0" after="0 0" line
  if ! sanity "$t" "$s"; then FAILED+=("$t/$s"); return 0; fi
  if ((WARM_S > 0)); then run_wrk "$t" "$s" "$WARMUP" "$TMP/wrk-warmup.log" || true; fi
  [[ -n "$pid" ]] && before="$(cpu_ticks "$pid")"
  local core_before core_after; core_before="$(core_busy "cpu$PROXY_CPU")"
  local perf_pid="" perf_out="$TMP/perf-$t-$s.csv"
  if ((SYSCALLS)) && [[ -n "$pid" ]]; then
    perf stat -x, -e "$PERF_EVENTS" -o "$perf_out" -p "$(tree_pids "$pid" | paste -sd, -)" &
    perf_pid=$!
  fi
  if ! run_wrk "$t" "$s" "$DURATION" "$log"; then
    [[ -n "$perf_pid" ]] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
    echo "run.sh: wrk failed for $t/$s:" >&2; tail -n 5 "$log" >&2; FAILED+=("$t/$s"); return 0
  fi
  # "syscalls epoll_waits context_switches" over the run, or "- - -"
  local kernel_counts="- - -"
  if [[ -n "$perf_pid" ]]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    kernel_counts="$(awk -F, '$3 ~ /raw_syscalls/ {a = $1} $3 ~ /epoll_wait/ {b = $1} $3 ~ /context-switches/ {c = $1}
      END { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/ && c ~ /^[0-9]+$/) print a, b, c; else print "- - -" }' "$perf_out")"
  fi
  [[ -n "$pid" ]] && after="$(cpu_ticks "$pid")"
  core_after="$(core_busy "cpu$PROXY_CPU")"
  line="$(grep '^RESULT ' "$log" | tail -n 1)" || { echo "run.sh: no wrk result for $t/$s" >&2; FAILED+=("$t/$s"); return 0; }
  # shellcheck disable=SC2034  # all set by the eval below
  local requests duration_us bytes p50_us p99_us max_us err_connect err_read err_write err_status err_timeout
  eval "$(echo "${line#RESULT }" | tr ' ' '\n' | grep -E '^[a-z0-9_]+=[0-9]+$')"
  local errors=$((err_connect + err_read + err_write + err_status + err_timeout))
  # other = time the proxy's core was busy with anything but the proxy (softirq, other programs)
  local u0 s0 u1 s1; read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  local used=$(( (u1 - u0) + (s1 - s0) ))
  local other=$(( (core_after - core_before) - used ))
  ROWS+=("$ROUND $s $t $requests $duration_us $p50_us $p99_us $errors $([[ -n "$pid" ]] && echo "$used" || echo -) $other $([[ -n "$pid" ]] && echo $((u1 - u0)) || echo -) $kernel_counts")
  printf '   %-12s %-10s %9d req  %10.0f req/s  p99 %7.2f ms  errors %d\n' "$t" "$s" "$requests" \
    "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN{print r/(d/1e6)}')" "$(awk -v p="$p99_us" 'BEGIN{print p/1000}')" "$errors"
  if ((errors > 0)); then echo "   warning: $errors errors (non-2xx/3xx, socket errors or timeouts) in $t/$s" >&2; fi
  if ((other * 100000000 > 15 * CLK_TCK * duration_us)); then
    echo "   warning: core $PROXY_CPU was $(awk -v o="$other" -v d="$duration_us" -v k="$CLK_TCK" 'BEGIN{printf "%.0f", 100*o/k/(d/1e6)}')% busy with other work during $t/$s: noisy" >&2
  fi
}

# Pre-flight: is something else using the CPUs?
b0="$(core_busy cpu)"; sleep 1; b1="$(core_busy cpu)"
BG_PCT=$(( (b1 - b0) * 100 / CLK_TCK / CORES ))
if ((BG_PCT > 10)); then
  echo "run.sh: warning: the machine is already ${BG_PCT}% busy (other programs); results will be noisy" >&2
fi
echo "== Sima load comparison: ${DURATION} x ${CONNECTIONS} connections x ${THREADS} wrk threads;" \
     "proxy on core $PROXY_CPU, wrk+upstream on core $LOAD_CPU ($CORES cores); upstream $UPSTREAM_HOST" \
     "($( ((PUBLIC_UPSTREAM)) && echo "geo database" || echo "geo.overrides")); temp dir $TMP"
START_HOST="$UPSTREAM_HOST" start_server upstream "$LOAD_CPU" "$UPSTREAM_PORT" "$TMP/upstream/stdout.log" \
  nginx -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;'
UPSTREAM_PID="$LAST_PID"

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
((ROUNDS > 1)) && echo "== round $ROUND of $ROUNDS"
for t in "${TARGETS[@]}"; do
  echo "-- $t"
  pid=""
  case "$t" in
    direct) ;;
    nginx)
      start_server nginx "$PROXY_CPU" "$NGINX_PORT" "$TMP/nginx/stdout.log" \
        nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' || { FAILED+=("$t"); continue; }
      pid="$LAST_PID" ;;
    squid)
      start_server squid "$PROXY_CPU" "$SQUID_PORT" "$TMP/squid/stdout.log" \
        squid -N -f "$TMP/squid/squid.conf" || { FAILED+=("$t"); continue; }
      pid="$LAST_PID" ;;
    hyper-floor)
      start_server "$t" "$PROXY_CPU" "$FLOOR_PORT" "$TMP/floor.log" \
        "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "$UP" || { FAILED+=("$t"); continue; }
      pid="$LAST_PID" ;;
    sima-*)
      start_server "$t" "$PROXY_CPU" "$SIMA_PORT" "$TMP/sima/$t.log" \
        env SIMA_WORKER_THREADS=1 "$SIMA_BIN" run --config "$TMP/sima/sima.yaml" || { FAILED+=("$t"); continue; }
      pid="$LAST_PID" ;;
  esac
  for s in "${SCEN[@]}"; do measure "$t" "$s" "$pid"; done
  [[ -n "$pid" ]] && stop_server "$pid"
done
done
stop_server "$UPSTREAM_PID"

# ---- report --------------------------------------------------------------------
((${#ROWS[@]})) || die "no results (failed: ${FAILED[*]-})"
ver() { "$@" 2>&1 | head -n 1 | tr -d '"[:cntrl:]' | sed 's|[\\]||g' || true; }
V_NGINX="$(ver nginx -v)"; V_WRK="$(ver wrk -v)"
V_SQUID="$(command -v squid >/dev/null && ver squid -v || echo none)"
V_SIMA="none"; if want sima-forward || want sima-route; then V_SIMA="$(ver timeout 5 "$SIMA_BIN" --version)"; fi

mkdir -p "$(dirname "$OUT")"
printf '%s\n' "${ROWS[@]}" | awk -v tck="$CLK_TCK" -v out="$OUT.tmp" -v rounds="$ROUNDS" \
  -v dur="$DURATION" -v conns="$CONNECTIONS" -v thr="$THREADS" -v pcpu="$PROXY_CPU" -v lcpu="$LOAD_CPU" \
  -v cores="$CORES" -v bg="$BG_PCT" -v vn="$V_NGINX" -v vs="$V_SQUID" -v vw="$V_WRK" -v vsi="$V_SIMA" \
  -v upstream="$UPSTREAM_HOST" -v geo="$( ((PUBLIC_UPSTREAM)) && echo database || echo override)" -v when="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -v kern="$(uname -r)" -v failed="${FAILED[*]-}" '
function num(x) { return x == "" ? "null" : x }
function f(x, fmt) { return x == "" ? "n/a" : sprintf(fmt, x) }
function sort(a, k,   i, j, x) { for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x } }
{
  r = $1; s = $2; t = $3; n++; R[n] = r; S[n] = s; T[n] = t
  REQ[n] = $4; secs = $5 / 1e6; RPS[n] = $4 / secs; P50[n] = $6 / 1000; P99[n] = $7 / 1000; ERR[n] = $8
  if ($9 == "-") { CPU[n] = ""; PER10K[n] = ""; EFF[n] = ""; UTIL[n] = ""; USER[n] = "" }
  else {
    CPU[n] = $9 / tck; UTIL[n] = 100 * CPU[n] / secs
    PER10K[n] = $4 > 0 ? CPU[n] / $4 * 10000 : ""
    EFF[n] = CPU[n] > 0 ? $4 / CPU[n] : ""
    USER[n] = $9 > 0 ? 100 * $11 / $9 : ""
  }
  OTHER[n] = $10 > 0 ? 100 * ($10 / tck) / secs : 0
  if ($12 != "" && $12 != "-" && $4 > 0) { SYS[n] = $12 / $4; EPW[n] = $13 / $4; CSW[n] = $14 / $4; any_sys = 1 }
  else { SYS[n] = ""; EPW[n] = ""; CSW[n] = "" }
  E[r, s, t] = EFF[n]; seen[s] = 1
}
END {
  label["get"] = "GET 1KiB"; label["headers"] = "GET 1KiB+h"; label["post"] = "POST 64KiB"; label["json"] = "POST JSON"
  hdr = sprintf("%5s  %-10s  %-12s  %8s  %7s  %7s  %6s  %9s  %6s  %6s  %9s  %9s  %6s", "round", "scenario", "target", "req/s", "p50 ms", "p99 ms", "errors", "proxy CPU", "CPU %", "user%", "CPU-s/10k", "req/CPU-s", "other%")
  print ""; print hdr; gsub(/./, "-", hdr); print hdr
  for (i = 1; i <= n; i++)
    printf "%5d  %-10s  %-12s  %8.0f  %7.2f  %7.2f  %6d  %9s  %6s  %6s  %9s  %9s  %5.0f%%\n", R[i], label[S[i]], T[i], RPS[i], P50[i], P99[i], ERR[i],
      f(CPU[i], "%.2fs"), f(UTIL[i], "%.0f%%"), f(USER[i], "%.0f%%"), f(PER10K[i], "%.3f"), f(EFF[i], "%.0f"), OTHER[i]
  print ""
  print "user% = share of the proxy'"'"'s CPU spent in user space (the rest is the kernel: TCP, syscalls)"
  if (any_sys) {
    print ""
    hdr = sprintf("%5s  %-10s  %-12s  %12s  %14s  %14s", "round", "scenario", "target", "syscalls/req", "epoll_wait/req", "ctx-switch/req")
    print hdr; gsub(/./, "-", hdr); print hdr
    for (i = 1; i <= n; i++) if (SYS[i] != "")
      printf "%5d  %-10s  %-12s  %12.2f  %14.2f  %14.3f\n", R[i], label[S[i]], T[i], SYS[i], EPW[i], CSW[i]
    print "(counted by perf over each measured run: every system call, epoll_wait alone, and the times the proxy slept or was preempted)"
  }
  nr = 0
  no = split("get headers post json", order, " ")
  # pairs: each Sima target against nginx, squid and the hyper floor; the floor against nginx
  np = split("sima-forward/nginx sima-forward/squid sima-forward/hyper-floor sima-route/nginx sima-route/squid sima-route/hyper-floor hyper-floor/nginx", pairs, " ")
  for (oi0 = 1; oi0 <= no; oi0++) for (pi = 1; pi <= np; pi++) {
    s = order[oi0]; if (!(s in seen)) continue
    split(pairs[pi], pr, "/"); st = pr[1]; o = pr[2]
    who = st == "hyper-floor" ? "Floor" : "Sima"
    k = 0; list = ""
    for (r = 1; r <= rounds; r++) {
      if (E[r, s, st] == "" || E[r, s, o] == "") continue
      k++; v[k] = E[r, s, st] / E[r, s, o]; list = list (k > 1 ? ", " : "") sprintf("%.3f", v[k])
    }
    if (k == 0) continue
    sort(v, k)
    med = k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
    nr++; RSC[nr] = s; RT[nr] = st; RO[nr] = o; RV[nr] = med; RMIN[nr] = v[1]; RMAX[nr] = v[k]; RL[nr] = list
    if (k == 1) printf "%-5s efficiency ratio (req per proxy-CPU-second), %-10s %-12s / %-11s = %.2f\n", who, label[s], st, o, med
    else printf "%-5s efficiency ratio (req per proxy-CPU-second), %-10s %-12s / %-11s = %.2f  (median of %d rounds; range %.2f-%.2f)\n", who, label[s], st, o, med, k, v[1], v[k]
  }
  if (nr == 0) print "(no ratio: select Sima or hyper-floor, and nginx, squid or hyper-floor)"
  if (failed != "") print "FAILED: " failed
  printf "{\n  \"generated_at\": \"%s\",\n", when > out
  printf "  \"params\": {\"duration\": \"%s\", \"connections\": %d, \"wrk_threads\": %d, \"rounds\": %d, \"proxy_cpu\": %d, \"load_cpu\": %d, \"cores\": %d, \"clk_tck\": %d, \"kernel\": \"%s\", \"busy_pct_before\": %d, \"upstream\": \"%s\", \"geo\": \"%s\"},\n", dur, conns, thr, rounds, pcpu, lcpu, cores, tck, kern, bg, upstream, geo > out
  printf "  \"versions\": {\"nginx\": \"%s\", \"squid\": \"%s\", \"wrk\": \"%s\", \"sima\": \"%s\"},\n", vn, vs, vw, vsi > out
  printf "  \"results\": [\n" > out
  for (i = 1; i <= n; i++)
    printf "    {\"round\": %d, \"scenario\": \"%s\", \"target\": \"%s\", \"requests\": %d, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"errors\": %d, \"proxy_cpu_s\": %s, \"proxy_cpu_pct\": %s, \"proxy_user_pct\": %s, \"cpu_s_per_10k\": %s, \"req_per_cpu_s\": %s, \"proxy_core_other_pct\": %.1f, \"syscalls_per_req\": %s, \"epoll_waits_per_req\": %s, \"context_switches_per_req\": %s}%s\n", R[i], S[i], T[i], REQ[i], RPS[i], P50[i], P99[i], ERR[i], num(CPU[i]), UTIL[i] == "" ? "null" : sprintf("%.1f", UTIL[i]), USER[i] == "" ? "null" : sprintf("%.1f", USER[i]), PER10K[i] == "" ? "null" : sprintf("%.4f", PER10K[i]), EFF[i] == "" ? "null" : sprintf("%.1f", EFF[i]), OTHER[i], SYS[i] == "" ? "null" : sprintf("%.3f", SYS[i]), EPW[i] == "" ? "null" : sprintf("%.3f", EPW[i]), CSW[i] == "" ? "null" : sprintf("%.4f", CSW[i]), i < n ? "," : "" > out
  printf "  ],\n  \"ratios\": [\n" > out
  for (i = 1; i <= nr; i++)
    printf "    {\"scenario\": \"%s\", \"target\": \"%s\", \"vs\": \"%s\", \"req_per_cpu_s_ratio\": %.3f, \"min\": %.3f, \"max\": %.3f, \"per_round\": [%s]}%s\n", RSC[i], RT[i], RO[i], RV[i], RMIN[i], RMAX[i], RL[i], i < nr ? "," : "" > out
  printf "  ],\n  \"failed\": \"%s\"\n}\n", failed > out
}'
mv -f "$OUT.tmp" "$OUT"
echo "results: $OUT"
((${#FAILED[@]} == 0)) || exit 1
