#!/usr/bin/env bash
# User-space instructions Sima executes per proxied GET 1 KiB, counted by valgrind
# (cachegrind). Unlike CPU time on a shared machine, the count barely moves between runs,
# so it shows changes of 1% that bench/run.sh cannot. It does not see the kernel, cache
# misses or atomics: confirm a real gain with bench/run.sh -r 5.
#
# Method: run Sima under cachegrind twice, under a short and a long wrk load; the
# difference of the two totals over the difference of the request counts cancels start-up
# and shutdown. See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
export PATH="$PATH:/usr/sbin:/sbin"

TARGET="${TARGET:-forward}"
HEADERS="${HEADERS:-host}"
SHORT="${SHORT:-2s}"
LONG="${LONG:-10s}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18090}"
SIMA_PORT="${SIMA_PORT:-3138}"
SIMA_ADMIN_PORT="${SIMA_ADMIN_PORT:-9474}"
PUBLIC_UPSTREAM="${PUBLIC_UPSTREAM:-0}"
PUBLIC_ADDR="${PUBLIC_ADDR:-8.8.8.8}"
BINS=()
ORIG_ARGS=("$@")

usage() {
  cat <<EOF
Usage: bench/instructions.sh [options] [SIMA_BINARY ...]
  Prints the instructions per request of each binary (default target/release/sima).
  --target forward|route   how the request reaches Sima (default $TARGET; env TARGET)
  --headers host|typical   request headers: Host only, or seven typical ones more (user
                           agent, accept, accept-encoding, a JWT bearer token, a request
                           id, a client version, a trace id) (default $HEADERS; env HEADERS)
  --short D / --long D     wrk durations of the two runs (default $SHORT / $LONG)
  --public-upstream        the upstream at a public address ($PUBLIC_ADDR; env PUBLIC_ADDR)
                           inside a private network namespace, so Sima geolocates it
                           through its database, as bench/run.sh --public-upstream (root;
                           env PUBLIC_UPSTREAM=1)
Env BENCH_METHOD=POST BENCH_BODY_BYTES=N: POST a body of N bytes (one letter repeated, as
bench/run.sh's post scenario) instead, to count what inspecting a body costs.
Needs valgrind, nginx, wrk and curl (Debian: apt-get install valgrind nginx wrk curl).
Each binary takes about a minute.
EOF
}
while (($#)); do
  case "$1" in
    --target) TARGET="$2"; shift 2 ;;
    --headers) HEADERS="$2"; shift 2 ;;
    --short) SHORT="$2"; shift 2 ;;
    --long) LONG="$2"; shift 2 ;;
    --public-upstream) PUBLIC_UPSTREAM=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "instructions.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) BINS+=("$1"); shift ;;
  esac
done
((${#BINS[@]})) || BINS=("$REPO/target/release/sima")
[[ "$TARGET" == forward || "$TARGET" == route ]] || { echo "instructions.sh: --target forward|route" >&2; exit 2; }
[[ "$HEADERS" == host || "$HEADERS" == typical ]] || { echo "instructions.sh: --headers host|typical" >&2; exit 2; }
for tool in valgrind nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: missing $tool (apt-get install valgrind nginx wrk curl)" >&2; exit 2; }
done
for b in "${BINS[@]}"; do [[ -x "$b" ]] || { echo "instructions.sh: no binary at $b (cargo build --release)" >&2; exit 2; }; done
UPSTREAM_HOST=127.0.0.1
if ((PUBLIC_UPSTREAM)); then use_public_upstream "$PUBLIC_ADDR" "$0" "${ORIG_ARGS[@]}"; fi
export UPSTREAM_HOST

TMP="$(mktemp -d /tmp/sima-instr.XXXXXX)"
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/www" "$TMP/up"
head -c 1024 /dev/zero | tr '\0' 'a' >"$TMP/www/1k.bin"
cat >"$TMP/up/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/up/b; proxy_temp_path $TMP/up/p; fastcgi_temp_path $TMP/up/f;
  uwsgi_temp_path $TMP/up/u; scgi_temp_path $TMP/up/s;
  keepalive_requests 1000000;
  server { listen $UPSTREAM_HOST:$UPSTREAM_PORT; root $TMP/www; }
}
EOF
# The same Sima set-up and wrk script as bench/run.sh.
write_sima_config "$TMP"
write_wrk_script "$TMP/req.lua"
export BENCH_HEADERS="$HEADERS"
if [[ "$TARGET" == forward ]]; then
  export BENCH_PATH="http://$UPSTREAM_HOST:$UPSTREAM_PORT/1k.bin" BENCH_HOST="$UPSTREAM_HOST:$UPSTREAM_PORT"
else
  export BENCH_PATH="/1k.bin" BENCH_HOST=""
fi

setsid nginx -c "$TMP/up/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)

# measure BIN DURATION: writes "instructions requests" to $TMP/result
measure() {
  local bin="$1" dur="$2" out="$TMP/cg.out" pid
  rm -f "$out"
  SIMA_WORKER_THREADS=1 setsid valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file="$out" "$bin" run --config "$TMP/sima.yaml" \
    >"$TMP/sima.log" 2>"$TMP/valgrind.log" &
  pid=$!
  PIDS+=("$pid")   # measure runs in this shell, so the EXIT trap sees it
  for _ in $(seq 120); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SIMA_ADMIN_PORT/readyz" && break
    kill -0 "$pid" 2>/dev/null || { echo "instructions.sh: Sima exited:" >&2; tail -5 "$TMP/valgrind.log" >&2; exit 1; }
    sleep 0.5
  done
  local reqs
  reqs="$(wrk -t1 -c32 -d"$dur" -s "$TMP/req.lua" "http://127.0.0.1:$SIMA_PORT" | sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p')"
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid" 2>/dev/null || true
  [[ -s "$out" ]] || { echo "instructions.sh: no cachegrind output; see $TMP/valgrind.log" >&2; exit 1; }
  [[ "$reqs" =~ ^[0-9]+$ ]] || { echo "instructions.sh: wrk reported no request count" >&2; exit 1; }
  echo "$(awk '/^summary:/ {print $2}' "$out") $reqs" >"$TMP/result"
}

WHAT="${BENCH_BODY_BYTES:+with a body of $BENCH_BODY_BYTES bytes}"
WHAT="${WHAT:-1 KiB}"
for bin in "${BINS[@]}"; do
  echo "== $bin ($TARGET, headers $HEADERS, short $SHORT, long $LONG) ..." >&2
  measure "$bin" "$SHORT"
  read -r i1 r1 <"$TMP/result"
  measure "$bin" "$LONG"
  read -r i2 r2 <"$TMP/result"
  if ((r2 <= r1)); then
    echo "instructions.sh: the long run served no more requests than the short one ($r2 <= $r1)" >&2
    exit 1
  fi
  echo "$bin: $(( (i2 - i1) / (r2 - r1) )) instructions per request ($TARGET ${BENCH_METHOD:-GET} $WHAT, headers $HEADERS; runs of $r1 and $r2 requests)"
done
