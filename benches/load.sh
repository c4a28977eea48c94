#!/usr/bin/env bash
# Whole-proxy load bench: claimgate against nginx, same load for every row, in one run.
#
#   bash benches/load.sh     # ~4 minutes after the release build; prints a Markdown table
#
# Everything listens on 127.0.0.1 only and is stopped on exit. Rows (wrk, same Lua script, same
# tokens in the Authorization header for every row):
#   upstream-direct        wrk -> upstream nginx (`return 200`)
#   nginx-plain            wrk -> nginx proxy_pass (keep-alive pool) -> upstream; no auth at all
#   claimgate-rotating     wrk -> claimgate (cache on) -> upstream; 10 000 distinct tokens round-robin
#   claimgate-one-token    wrk -> claimgate (cache on); one token repeated
#   claimgate-no-cache     wrk -> claimgate (verified_token_cache.enabled: false); 10 000 tokens
#   claimgate-auth-none    claimgate as a plain proxy (one rule, `auth: none`): its HTTP engine
#                          (hyper + tokio) without any token work, to split the cost
#   claimgate-user-data    as claimgate-rotating, plus custom user data from MongoDB (one document
#                          per token, all cached after the warm-up), a `%%user.custom_data.roles`
#                          header and an `allow_when` rule on `canRead`
# Every row runs REPEAT times, rounds interleaved, and the table shows medians. Each claimgate run
# gets a fresh process, so its peak RSS (VmHWM) is its own. "proxy CPU µs/req" is the proxy's
# utime+stime (nginx: master + workers) over the measured window divided by the requests served:
# on a shared 2-core box it is steadier than req/s. A row with any non-2xx response or socket
# error is REFUSED: printed as an error, not reported, and the script exits 1.
#
# Knobs (environment): DURATION (s per run, default 8), WARMUP (s, 2), REPEAT (3),
# CONNECTIONS (64), THREADS (2), TOKENS (10000), PROXY_WORKERS (2: nginx-plain
# worker_processes, matching claimgate's tokio runtime, one worker per core = 2 here),
# UPSTREAM_WORKERS (1), BASE_PORT (18080), KEEP=1 keeps the work dir, PERF=1 also profiles
# claimgate (cache off, then cache on) with `perf record` after the table (separate runs, so
# profiling never skews the table). USER_DATA=0 drops the user-data row (and MongoDB).
# MEMORY=1 adds the memory runs after the table, with every cache at its default bounds:
# MEM_TOKENS (100000) distinct RS256 tokens, each with its user document, through claimgate with
# user data for MEM_DURATION seconds (default 120), RSS sampled every MEM_SAMPLE seconds
# (MEM_PREFILL=1 first fills the user data cache); then MEM_MILLION (1000000, 0 to skip) distinct
# ES256 tokens over the same MEM_TOKENS users, as long again. Both optional runs live in
# load_memory.sh and load_perf.sh. BASELINE_BIN=path adds rows before-rotating and
# before-one-token run with that claimgate binary (an older build), interleaved in the same
# rounds: before/after in one run.
set -euo pipefail

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-10000}
PROXY_WORKERS=${PROXY_WORKERS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
BASE_PORT=${BASE_PORT:-18080}
PERF=${PERF:-0}
USER_DATA=${USER_DATA:-1}
MEMORY=${MEMORY:-0}
MEM_TOKENS=${MEM_TOKENS:-100000}
MEM_DURATION=${MEM_DURATION:-120}
MEM_SAMPLE=${MEM_SAMPLE:-10}
MEM_MILLION=${MEM_MILLION:-1000000}
BASELINE_BIN=${BASELINE_BIN:-}
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

MONGO=""
stop_mongo() { [ -z "$MONGO" ] || CLAIMGATE_MONGO_PIDFILE="$WORK/mongo.pid" bash "$MONGO" stop >/dev/null 2>&1 || true; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_mongo
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

# ---------------------------------------------------------------- build, MongoDB, tokens
MINT_COUNT=$TOKENS
[ "$MEMORY" = 1 ] && [ "$MEM_TOKENS" -gt "$MINT_COUNT" ] && MINT_COUNT=$MEM_TOKENS
MINT_ARGS=(--out "$WORK" --count "$MINT_COUNT" --issuer "$ISSUER" --ttl 3600)
[ "$MEMORY" = 1 ] && [ "$MEM_MILLION" -gt 0 ] && MINT_ARGS+=(--es256 "$MEM_MILLION" --users "$MINT_COUNT")
if [ "$USER_DATA" = 1 ] || [ "$MEMORY" = 1 ]; then
  MONGO="$ROOT/../shared/ci/mongo.sh"
  [ -f "$MONGO" ] || die "no $MONGO (set USER_DATA=0 to skip the user-data row)"
  MONGO_LINE=$(CLAIMGATE_MONGO_PIDFILE="$WORK/mongo.pid" bash "$MONGO" start) || die "mongo.sh start failed"
  MONGODB_URI=${MONGO_LINE#MONGODB_URI=}
  MINT_ARGS+=(--mongo-uri "$MONGODB_URI")
  log "MongoDB-wire server at $MONGODB_URI"
fi
log "building claimgate (release) and minting $MINT_COUNT RS256 tokens"
(cd "$ROOT" && cargo build --release --quiet --bin claimgate)
(cd "$ROOT" && cargo bench --quiet --bench mint -- "${MINT_ARGS[@]}")
BIN="$TARGET_DIR/release/claimgate"
[ -x "$BIN" ] || die "no binary at $BIN"
mv "$WORK/tokens.txt" "$WORK/all-tokens.txt"
head -n "$TOKENS" "$WORK/all-tokens.txt" >"$WORK/tokens.txt"
chmod 644 "$WORK/jwks.json" "$WORK/tokens.txt" "$WORK/all-tokens.txt"
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
# DEFAULT_CACHES=1 (the memory run) leaves every cache bound at its default, as a new user would.
token_cache_yaml() { # enabled
  if [ "${DEFAULT_CACHES:-0}" = 1 ]; then
    echo "verified_token_cache: {enabled: $1}"
  else
    echo "verified_token_cache: {enabled: $1, max_entries: 100000}"
  fi
}
user_cache_yaml() {
  if [ "${DEFAULT_CACHES:-0}" = 1 ]; then
    echo "cache: {ttl_seconds: 3600}"
  else
    echo "cache: {max_entries: 200000, ttl_seconds: 3600}"
  fi
}
start_claimgate() { # name, cache enabled (true|false), user data (true|false|auth-none)
  {
    cat <<EOF
listen: 127.0.0.1:$CLAIMGATE_PORT
upstream: {url: "http://127.0.0.1:$UPSTREAM_PORT"}
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
# No drain delay: each row stops its claimgate between runs, and waiting out the default 5 s
# delay for every row made the default run take 6 minutes instead of under 5.
shutdown: {delay_seconds: 0, grace_seconds: 1}
$(token_cache_yaml "$2")
providers:
  - name: bench
    issuer: "$ISSUER"
    jwks_uri: "http://127.0.0.1:$JWKS_PORT/jwks.json"
    audience: [claimgate-bench]
    algorithms: [RS256, ES256]
    metadata_fields:
      - {name: name}
      - {name: email}
EOF
    if [ "${3:-false}" = auth-none ]; then
      echo 'rules: [{match: {path_prefix: "/"}, auth: none}]'
    fi
    if [ "${3:-false}" = true ]; then
      cat <<EOF
user_data:
  source: mongodb
  uri: "$MONGODB_URI"
  database: bench
  collection: users
  user_id_field: user_id
  required: true
  $(user_cache_yaml)
forward:
  user_header: X-Claimgate-User
  headers:
    X-User-Id: "%%user.id"
    X-User-Roles: {from: "%%user.custom_data.roles", encoding: csv}
rules:
  - match: {path_prefix: "/"}
    allow_when: {"%%user.custom_data.canRead": true}
EOF
    fi
  } >"$WORK/claimgate-$1.yaml"
  RUST_LOG=warn "${CLAIMGATE_BIN:-$BIN}" --config "$WORK/claimgate-$1.yaml" 2>"$WORK/claimgate-$1.log" &
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

# ---------------------------------------------------------------- rows
# Each round runs every row once (fresh claimgate per row); rows are interleaved across rounds so
# that drift in the machine's load hits all of them alike. The table shows per-row medians.
ROW_NAMES=(upstream-direct nginx-plain claimgate-auth-none claimgate-rotating claimgate-one-token claimgate-no-cache)
[ "$USER_DATA" = 1 ] && ROW_NAMES+=(claimgate-user-data)
[ -n "$BASELINE_BIN" ] && ROW_NAMES+=(before-rotating before-one-token)
declare -A RPS P50 P99 CPU RSS NOTE BAD
REFUSED=0

# CPU time (utime + stime, all threads) of the given processes and their children, in clock ticks.
cpu_ticks() {
  local total=0 pid p t
  for pid in "$@"; do
    for p in "$pid" $(ps -o pid= --ppid "$pid" || true); do
      t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)
      total=$((total + ${t:-0}))
    done
  done
  echo "$total"
}

# Peak RSS in MiB, summed over the given processes and their children (nginx master + workers).
peak_rss() {
  local total=0 pid p kb
  for pid in "$@"; do
    for p in "$pid" $(ps -o pid= --ppid "$pid" || true); do
      kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
      total=$((total + ${kb:-0}))
    done
  done
  awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'
}

metric() { # name → value from claimgate's /metrics (0 if absent)
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

run_wrk() { # name, round, url, token file, proxy pids ("" for none)
  local name=$1 round=$2 url=$3 tokens=$4 pids=$5 out line before=0 after=0
  log "$name (round $round/$REPEAT): ${WARMUP}s warm-up, ${DURATION}s measured"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 2s -s "$WORK/tokens.lua" "$url" -- "$tokens" >/dev/null
  [ -n "$pids" ] && before=$(cpu_ticks $pids)
  out="$WORK/wrk-$name-$round.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 2s --latency -s "$WORK/tokens.lua" "$url" -- "$tokens" >"$out"
  [ -n "$pids" ] && after=$(cpu_ticks $pids)
  line=$(grep '^RESULT ' "$out") || die "$name: wrk printed no RESULT line: $(cat "$out")"
  local requests duration_us p50 p99 non2xx errors rps cpu="—"
  field() { sed -E "s/.* $1=([0-9]+).*/\1/" <<<" $line"; }
  requests=$(field requests) duration_us=$(field duration_us) p50=$(field p50_us) p99=$(field p99_us)
  non2xx=$(field non2xx) errors=$(field socket_errors)
  if [ "$non2xx" -gt 0 ] || [ "$errors" -gt 0 ] || [ "$requests" -eq 0 ]; then
    log "ERROR: row $name REFUSED: round $round had $non2xx non-2xx responses and $errors socket errors in $requests requests"
    BAD[$name]="${BAD[$name]:-}round $round: $non2xx non-2xx, $errors socket errors; "
    REFUSED=1
    return
  fi
  rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
  if [ -n "$pids" ]; then
    cpu=$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v r="$requests" \
      'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
    RSS[$name]=$(awk -v a="${RSS[$name]:-0}" -v b="$(peak_rss $pids)" 'BEGIN { print (b > a ? b : a) }')
  fi
  log "$name: $rps req/s, p50 ${p50} µs, p99 ${p99} µs, proxy CPU ${cpu} µs/req"
  RPS[$name]="${RPS[$name]:-} $rps" P50[$name]="${P50[$name]:-} $p50"
  P99[$name]="${P99[$name]:-} $p99" CPU[$name]="${CPU[$name]:-} $cpu"
}

# The user-data row measures the cached path: load until every user's document is in the cache
# (the MongoDB-wire server answers a few thousand lookups a second), at most 90 s.
fill_user_data_cache() { # token file, expected entries
  local entries=0 deadline=$(($(date +%s) + 90))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d3s --timeout 2s -s "$WORK/tokens.lua" \
      "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$1" >/dev/null
    entries=$(metric claimgate_user_data_cache_entries)
    [ "${entries%.*}" -ge "$2" ] && return 0
  done
  die "user data cache holds $entries of $2 documents after 90 s"
}

run_claimgate() { # name, round, cache (true|false), token file, user data (true|false)
  start_claimgate "$1" "$3" "${5:-false}"
  [ "${5:-false}" = true ] && fill_user_data_cache "$4" "$(wc -l <"$4")"
  run_wrk "$1" "$2" "http://127.0.0.1:$CLAIMGATE_PORT/" "$4" "$CLAIMGATE_PID"
  if [ "$3" = true ]; then
    NOTE[$1]=$(awk -v h="$(metric claimgate_token_cache_hits_total)" -v m="$(metric claimgate_token_cache_misses_total)" \
      'BEGIN { t = h + m; printf "cache on, hits %.1f%%", (t > 0 ? 100 * h / t : 0) }')
    if [ "${5:-false}" = auth-none ]; then
      NOTE[$1]="plain proxy: no token work at all"
    elif [ "${5:-false}" = true ]; then
      NOTE[$1]+=$(awk -v h="$(metric claimgate_user_data_cache_hits_total)" -v m="$(metric claimgate_user_data_cache_misses_total)" \
        'BEGIN { t = h + m; printf "; user data cache hits %.1f%%", (t > 0 ? 100 * h / t : 0) }')
    fi
  else
    NOTE[$1]="cache off: every request verifies"
  fi
  stop_claimgate
}

NOTE[upstream-direct]="no proxy"
NOTE[nginx-plain]="nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $PROXY_WORKERS workers, no auth"
for round in $(seq "$REPEAT"); do
  run_wrk upstream-direct "$round" "http://127.0.0.1:$UPSTREAM_PORT/" "$WORK/tokens.txt" ""
  run_wrk nginx-plain "$round" "http://127.0.0.1:$NGINX_PORT/" "$WORK/tokens.txt" "$NGINX_PROXY_PID"
  run_claimgate claimgate-auth-none "$round" true "$WORK/tokens.txt" auth-none
  run_claimgate claimgate-rotating "$round" true "$WORK/tokens.txt"
  run_claimgate claimgate-one-token "$round" true "$WORK/one-token.txt"
  run_claimgate claimgate-no-cache "$round" false "$WORK/tokens.txt"
  if [ "$USER_DATA" = 1 ]; then
    run_claimgate claimgate-user-data "$round" true "$WORK/tokens.txt" true
  fi
  if [ -n "$BASELINE_BIN" ]; then
    CLAIMGATE_BIN=$BASELINE_BIN run_claimgate before-rotating "$round" true "$WORK/tokens.txt"
    CLAIMGATE_BIN=$BASELINE_BIN run_claimgate before-one-token "$round" true "$WORK/one-token.txt"
  fi
done

# ---------------------------------------------------------------- table
median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "—"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s–%s", lo, hi }'; }
ms() { awk -v x="$1" 'BEGIN { printf "%.2f", x / 1000 }'; }

base_rps=$(median <<<"${RPS[nginx-plain]:-}")
base_p99=$(median <<<"${P99[nginx-plain]:-}")
echo
echo "claimgate load bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores shared by wrk, upstream nginx and the proxy; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency after ${WARMUP}s warm-up, $REPEAT interleaved rounds, medians shown;"
echo "GET / with a ~900-byte RS256 bearer token on every row ($TOKENS distinct tokens round-robin unless one-token)"
echo
echo "| row | req/s (median) | req/s range | ÷ nginx-plain | p50 ms | p99 ms | p99 − nginx-plain | proxy CPU µs/req | peak RSS MiB | notes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for name in "${ROW_NAMES[@]}"; do
  if [ -n "${BAD[$name]:-}" ]; then
    echo "| $name | REFUSED | | | | | | | | ${BAD[$name]} |"
    continue
  fi
  [ -n "${RPS[$name]:-}" ] || continue # REPEAT=0: memory or profile runs only
  rps=$(median <<<"${RPS[$name]}" | xargs printf '%.0f') p50=$(median <<<"${P50[$name]}") p99=$(median <<<"${P99[$name]}")
  ratio="—" delta="—"
  if [ "$base_rps" != "—" ]; then
    ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }')
    delta=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%+.2f ms", (a - b) / 1000 }')
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$rps" "$(spread <<<"${RPS[$name]}")" \
    "$ratio" "$(ms "$p50")" "$(ms "$p99")" "$delta" "$(median <<<"${CPU[$name]}")" "${RSS[$name]:-—}" "${NOTE[$name]}"
done

# ---------------------------------------------------------------- optional runs
# shellcheck source=benches/load_memory.sh
[ "$MEMORY" = 1 ] && . "$ROOT/benches/load_memory.sh"
# shellcheck source=benches/load_perf.sh
[ "$PERF" = 1 ] && . "$ROOT/benches/load_perf.sh"

log "done in $(($(date +%s) - started_at)) s"
[ "$REFUSED" = 0 ] || exit 1
