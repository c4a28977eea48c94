#!/usr/bin/env bash
# Whole-proxy load bench: claimgate against nginx, same load for every row, in one run.
#
#   bash benches/load.sh            # ~2.5 minutes after the release build; prints a Markdown table
#
# Everything listens on 127.0.0.1 only and is stopped on exit. Rows (wrk, same Lua script, same
# tokens in the Authorization header for every row):
#   upstream-direct        wrk -> upstream nginx (`return 200`)
#   nginx-plain            wrk -> nginx proxy_pass (keep-alive pool) -> upstream; no auth at all
#   claimgate-rotating     wrk -> claimgate (cache on) -> upstream; 10 000 distinct tokens round-robin
#   claimgate-one-token    wrk -> claimgate (cache on); one token repeated
#   claimgate-no-cache     wrk -> claimgate (verified_token_cache.enabled: false); 10 000 tokens
# Each claimgate row gets a fresh process, so its peak RSS (VmHWM) is its own.
# A row with any non-2xx response or socket error is REFUSED: printed as an error, not reported.
#
# Knobs (environment): DURATION (s, default 15), WARMUP (s, 3), CONNECTIONS (64), THREADS (2),
# TOKENS (10000), PROXY_WORKERS (2: nginx-plain worker_processes; claimgate's tokio runtime has
# one worker per core, 2 here), UPSTREAM_WORKERS (1), BASE_PORT (18080), KEEP=1 keeps the
# work dir, PERF=1 also profiles claimgate (cache off, then cache on) with `perf record` after
# the table (a separate, unreported run, so profiling never skews the table).
set -euo pipefail

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-10000}
PROXY_WORKERS=${PROXY_WORKERS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
BASE_PORT=${BASE_PORT:-18080}
PERF=${PERF:-0}
ISSUER="https://issuer.bench.example/"

UPSTREAM_PORT=$((BASE_PORT + 1))
JWKS_PORT=$((BASE_PORT + 2))
NGINX_PORT=$((BASE_PORT + 3))
CLAIMGATE_PORT=$((BASE_PORT + 4))
ADMIN_PORT=$((BASE_PORT + 5))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
started_at=$(date +%s)

log() { printf '[load %3ds] %s\n' "$(($(date +%s) - started_at))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- lifecycle
WORK=$(mktemp -d /tmp/claimgate-load.XXXXXX)
chmod 755 "$WORK" # nginx workers drop privileges and must read jwks.json
PIDS=()

stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $UPSTREAM_PORT $JWKS_PORT $NGINX_PORT $CLAIMGATE_PORT $ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (set BASE_PORT)"
  fi
done

wait_http() { # URL, expected status, what
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)
    [ "$code" = "$2" ] && return 0
    sleep 0.1
  done
  die "$3 did not answer $2 at $1 within 10 s (last: $code)"
}

# ---------------------------------------------------------------- build and tokens
log "building claimgate (release) and minting $TOKENS RS256 tokens"
(cd "$ROOT" && cargo build --release --quiet --bin claimgate)
(cd "$ROOT" && cargo bench --quiet --bench mint -- --out "$WORK" --count "$TOKENS" --issuer "$ISSUER" --ttl 3600)
BIN="$TARGET_DIR/release/claimgate"
[ -x "$BIN" ] || die "no binary at $BIN"
chmod 644 "$WORK/jwks.json" "$WORK/tokens.txt"
head -n 1 "$WORK/tokens.txt" >"$WORK/one-token.txt"
ONE_TOKEN=$(cat "$WORK/one-token.txt")
cp "$ROOT/benches/wrk_tokens.lua" "$WORK/tokens.lua"

# ---------------------------------------------------------------- nginx: upstream + JWKS, proxy
nginx_common() { # name
  cat <<EOF
pid $WORK/$1.pid;
error_log $WORK/$1.error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # name
  cat <<EOF
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 100000000;
  client_body_temp_path $WORK/$1-tmp/body;
  proxy_temp_path $WORK/$1-tmp/proxy;
  fastcgi_temp_path $WORK/$1-tmp/fastcgi;
  uwsgi_temp_path $WORK/$1-tmp/uwsgi;
  scgi_temp_path $WORK/$1-tmp/scgi;
EOF
}

{
  echo "worker_processes $UPSTREAM_WORKERS;"
  nginx_common upstream
  echo "http {"
  nginx_http_common upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$JWKS_PORT;
    location = /jwks.json { default_type application/json; alias $WORK/jwks.json; }
  }
}
EOF
} >"$WORK/upstream.conf"

{
  echo "worker_processes $PROXY_WORKERS;"
  nginx_common proxy
  echo "http {"
  nginx_http_common proxy
  cat <<EOF
  upstream backend {
    server 127.0.0.1:$UPSTREAM_PORT;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$WORK/proxy.conf"

start_nginx() { # name
  mkdir -p "$WORK/$1-tmp"
  "$NGINX" -t -q -p "$WORK" -e "$WORK/$1.error.log" -c "$WORK/$1.conf" || die "nginx $1 config"
  "$NGINX" -p "$WORK" -e "$WORK/$1.error.log" -c "$WORK/$1.conf" -g 'daemon off;' &
  PIDS+=($!)
  LAST_PID=$!
}

start_nginx upstream
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" 200 "upstream nginx"
wait_http "http://127.0.0.1:$JWKS_PORT/jwks.json" 200 "JWKS nginx"
start_nginx proxy
NGINX_PROXY_PID=$LAST_PID
wait_http "http://127.0.0.1:$NGINX_PORT/" 200 "nginx-plain"

# ---------------------------------------------------------------- claimgate
CLAIMGATE_PID=""
start_claimgate() { # name, cache enabled (true|false)
  cat >"$WORK/claimgate-$1.yaml" <<EOF
listen: 127.0.0.1:$CLAIMGATE_PORT
upstream: {url: "http://127.0.0.1:$UPSTREAM_PORT"}
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
verified_token_cache: {enabled: $2, max_entries: 100000}
providers:
  - name: bench
    issuer: "$ISSUER"
    jwks_uri: "http://127.0.0.1:$JWKS_PORT/jwks.json"
    audience: [claimgate-bench]
    algorithms: [RS256]
    metadata_fields:
      - {name: name}
      - {name: email}
EOF
  RUST_LOG=warn "$BIN" --config "$WORK/claimgate-$1.yaml" 2>"$WORK/claimgate-$1.log" &
  CLAIMGATE_PID=$!
  PIDS+=("$CLAIMGATE_PID")
  wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 200 "claimgate ($1) readyz"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    -H "Authorization: Bearer $ONE_TOKEN" "http://127.0.0.1:$CLAIMGATE_PORT/")
  [ "$code" = 200 ] || die "claimgate ($1) answered $code to a valid token; log: $(tail -n 5 "$WORK/claimgate-$1.log")"
}

stop_claimgate() {
  stop_pid "$CLAIMGATE_PID"
  wait "$CLAIMGATE_PID" 2>/dev/null || true
  local kept=()
  for pid in "${PIDS[@]}"; do [ "$pid" = "$CLAIMGATE_PID" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
  CLAIMGATE_PID=""
}

# Peak RSS in MiB, summed over the given processes and their children (nginx master + workers).
peak_rss() {
  local total=0 pid kb
  for pid in "$@"; do
    for p in "$pid" $(ps -o pid= --ppid "$pid" || true); do
      kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
      total=$((total + ${kb:-0}))
    done
  done
  awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'
}

metric() { # name → value from claimgate's /metrics (0 if absent)
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# ---------------------------------------------------------------- rows
ROWS=()
REFUSED=0

run_row() { # name, url, token file, rss pids ("" for none), note
  local name=$1 url=$2 tokens=$3 rss_pids=$4 note=$5 out line
  log "$name: ${WARMUP}s warm-up, ${DURATION}s measured ($CONNECTIONS connections, $THREADS threads)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 2s -s "$WORK/tokens.lua" "$url" -- "$tokens" >/dev/null
  out="$WORK/wrk-$name.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 2s --latency -s "$WORK/tokens.lua" "$url" -- "$tokens" >"$out"
  line=$(grep '^RESULT ' "$out") || die "$name: wrk printed no RESULT line: $(cat "$out")"
  local requests duration_us p50 p99 non2xx errors rss="—"
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  duration_us=$(sed -E 's/.*duration_us=([0-9]+).*/\1/' <<<"$line")
  p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
  p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
  non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")
  errors=$(sed -E 's/.*socket_errors=([0-9]+).*/\1/' <<<"$line")
  [ -n "$rss_pids" ] && rss=$(peak_rss $rss_pids)
  if [ "$non2xx" -gt 0 ] || [ "$errors" -gt 0 ] || [ "$requests" -eq 0 ]; then
    log "ERROR: row $name REFUSED: $non2xx non-2xx responses, $errors socket errors of $requests requests"
    ROWS+=("$name|REFUSED|$non2xx|$errors")
    REFUSED=1
    return
  fi
  local rps
  rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
  log "$name: $rps req/s, p50 ${p50} µs, p99 ${p99} µs, peak RSS ${rss} MiB"
  ROWS+=("$name|$rps|$p50|$p99|$requests|$rss|$note")
}

cache_note() {
  local hits misses
  hits=$(metric claimgate_token_cache_hits_total)
  misses=$(metric claimgate_token_cache_misses_total)
  awk -v h="$hits" -v m="$misses" 'BEGIN { t = h + m; if (t > 0) printf "cache hits %.1f%%", 100 * h / t; else printf "cache off" }'
}

run_row upstream-direct "http://127.0.0.1:$UPSTREAM_PORT/" "$WORK/tokens.txt" "" "no proxy"
run_row nginx-plain "http://127.0.0.1:$NGINX_PORT/" "$WORK/tokens.txt" "$NGINX_PROXY_PID" \
  "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $PROXY_WORKERS workers, no auth"

claimgate_row() { # name, cache, token file
  start_claimgate "$1" "$2"
  run_row "$1" "http://127.0.0.1:$CLAIMGATE_PORT/" "$3" "$CLAIMGATE_PID" "__CACHE__"
  local note
  note=$(cache_note)
  [ "$2" = true ] || note="cache off"
  ROWS[-1]=${ROWS[-1]/__CACHE__/$note}
  stop_claimgate
}
claimgate_row claimgate-rotating true "$WORK/tokens.txt"
claimgate_row claimgate-one-token true "$WORK/one-token.txt"
claimgate_row claimgate-no-cache false "$WORK/tokens.txt"

# ---------------------------------------------------------------- table
base_rps="" base_p99=""
for row in "${ROWS[@]}"; do
  IFS='|' read -r name rps p50 p99 _ <<<"$row"
  if [ "$name" = nginx-plain ] && [ "$rps" != REFUSED ]; then base_rps=$rps base_p99=$p99; fi
done

echo
echo "claimgate load bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores (shared by wrk, upstream and proxy), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency (after ${WARMUP}s warm-up), GET / with a ~900-byte RS256 bearer token on every row; $TOKENS distinct tokens unless 'one-token'"
echo
echo "| row | req/s | req/s ÷ nginx-plain | p50 ms | p99 ms | p99 − nginx-plain | peak RSS MiB | notes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for row in "${ROWS[@]}"; do
  IFS='|' read -r name rps p50 p99 requests rss note <<<"$row"
  if [ "$rps" = REFUSED ]; then
    echo "| $name | REFUSED | | | | | | $p50 non-2xx, $p99 socket errors |"
    continue
  fi
  ratio="—" delta="—"
  if [ -n "$base_rps" ]; then
    ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }')
    delta=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%+.2f ms", (a - b) / 1000 }')
  fi
  printf '| %s | %s | %s | %.2f | %.2f | %s | %s | %s |\n' "$name" "$rps" "$ratio" \
    "$(awk -v x="$p50" 'BEGIN { print x / 1000 }')" "$(awk -v x="$p99" 'BEGIN { print x / 1000 }')" \
    "$delta" "$rss" "$note"
done

# ---------------------------------------------------------------- optional profile
if [ "$PERF" = 1 ]; then
  for mode in false true; do
    start_claimgate "perf-cache-$mode" "$mode"
    log "perf: profiling claimgate (cache $mode) for 10 s under the same load"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d12s --timeout 2s -s "$WORK/tokens.lua" \
      "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$WORK/tokens.txt" >/dev/null &
    wrk_pid=$!
    sleep 1
    perf record -q -F 499 -g -o "$WORK/perf-cache-$mode.data" -p "$CLAIMGATE_PID" -- sleep 10 2>/dev/null || log "perf record failed"
    wait "$wrk_pid" || true
    echo
    echo "perf: claimgate, verified_token_cache.enabled: $mode — top symbols by self time"
    echo '```'
    perf report -q -i "$WORK/perf-cache-$mode.data" --no-children --sort dso,symbol --percent-limit 1 --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | cut -c1-150 | head -n 30 || true
    echo '```'
    stop_claimgate
  done
fi

log "done in $(($(date +%s) - started_at)) s"
[ "$REFUSED" = 0 ] || exit 1
