#!/usr/bin/env bash
# Soak: claimgate under steady mixed traffic for a bounded time, watching for leaks, stray
# statuses and latency drift.
#
#   bash benches/soak.sh                  # 10 minutes after the release build
#   SOAK_SECONDS=120 bash benches/soak.sh
#
# Everything listens on 127.0.0.1 only and is stopped on exit. The setup is benches/load.sh's:
# nginx as upstream (`return 200`) and JWKS server, a MongoDB-wire server from
# ../shared/ci/mongo.sh with one user document per token, tokens minted by benches/mint.rs
# (RS256, benches/common). claimgate runs with user data (required,
# cached, change stream on), an `allow_when` rule on `canRead` and the verified-token cache on.
#
# Three wrk processes run side by side, one per token class, each with its own expected status:
#   valid     TOKENS distinct valid tokens, round-robin                       -> 200
#   invalid   the same tokens with the last signature character changed     -> 401
#   revoked   tokens of the same key that expired an hour ago               -> 401
# "Revoked" is the expired class: revocation (user_data.tokens_valid_after_field) is proven by
# tests/revocation.rs. To soak it instead, mint those tokens valid and set the field in their
# users' documents, and this class measures revocation.
# Meanwhile a Python loop (pymongo from mongo.sh's own venv) updates user documents (their
# `roles`, which claimgate forwards) UPDATE_EVERY seconds, so the change stream and cache
# invalidation run the whole time; every update keeps `canRead: true`, so no answer changes.
# Two reloads are sent at 1/3 and 2/3 of the run, as SIGHUP, if `claimgate --help` mentions
# reload support; otherwise the script says "reload: not supported by this build" and goes on
# (a SIGHUP would end a build without a handler).
#
# The run is cut into one-minute segments (the last may be shorter). Each segment reports the
# valid class's req/s and p99, the other classes' p99, and every status that was not the
# expected one (socket errors included). RSS (VmRSS) is read at start, middle and end, plus the
# peak (VmHWM). The script exits 1 if any unexpected status or socket error was seen.
#
# Knobs (environment): SOAK_SECONDS (600), CONNECTIONS per class (valid 8, invalid 2, revoked 2:
# VALID_CONNECTIONS, BAD_CONNECTIONS), THREADS per wrk (1), TOKENS (2000), UPDATE_EVERY (0.2),
# BASE_PORT (18180), KEEP=1 keeps the work dir.
set -euo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-600}
VALID_CONNECTIONS=${VALID_CONNECTIONS:-8}
BAD_CONNECTIONS=${BAD_CONNECTIONS:-2}
THREADS=${THREADS:-1}
TOKENS=${TOKENS:-2000}
UPDATE_EVERY=${UPDATE_EVERY:-0.2}
BASE_PORT=${BASE_PORT:-18180}
ISSUER="https://issuer.bench.example/"

UPSTREAM_PORT=$((BASE_PORT + 1))
JWKS_PORT=$((BASE_PORT + 2))
CLAIMGATE_PORT=$((BASE_PORT + 4))
ADMIN_PORT=$((BASE_PORT + 5))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
started_at=$(date +%s)

log() { printf '[soak %4ds] %s\n' "$(($(date +%s) - started_at))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# ../shared beside the clone, or beside the main checkout of a git worktree.
MONGO="$ROOT/../shared/ci/mongo.sh"
if [ ! -f "$MONGO" ]; then
  common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  [ -n "$common" ] && MONGO="$common/../../shared/ci/mongo.sh"
fi
[ -f "${CLAIMGATE_SHARED:-/nonexistent}/ci/mongo.sh" ] && MONGO="$CLAIMGATE_SHARED/ci/mongo.sh"
[ -f "$MONGO" ] || die "no shared/ci/mongo.sh (set CLAIMGATE_SHARED)"
PYTHON="${CLAIMGATE_MONGO_VENV:-$HOME/.cache/claimgate-mongo}/bin/python"

# ---------------------------------------------------------------- lifecycle
WORK=$(mktemp -d /tmp/claimgate-soak.XXXXXX)
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

MONGO_STARTED=0
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  [ "$MONGO_STARTED" = 1 ] && CLAIMGATE_MONGO_PIDFILE="$WORK/mongo.pid" bash "$MONGO" stop >/dev/null 2>&1
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in $UPSTREAM_PORT $JWKS_PORT $CLAIMGATE_PORT $ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (set BASE_PORT)"
  fi
done

wait_http() { # URL, expected status, what
  local code=""
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)
    [ "$code" = "$2" ] && return 0
    sleep 0.1
  done
  die "$3 did not answer $2 at $1 within 10 s (last: $code)"
}

# ---------------------------------------------------------------- MongoDB, build, tokens
MONGO_LINE=$(CLAIMGATE_MONGO_PIDFILE="$WORK/mongo.pid" bash "$MONGO" start) || die "mongo.sh start failed"
MONGO_STARTED=1
MONGODB_URI=${MONGO_LINE#MONGODB_URI=}
log "MongoDB-wire server at $MONGODB_URI"
[ -x "$PYTHON" ] || die "no $PYTHON (mongo.sh install makes it)"

log "building claimgate (release) and minting $TOKENS valid and $TOKENS expired RS256 tokens"
(cd "$ROOT" && cargo build --release --quiet --bin claimgate)
# The minting tool runs in the test profile (`cargo test --bench`): it shares the library build
# of `cargo test`, and how fast tokens are minted does not matter here.
(cd "$ROOT" && cargo test --quiet --bench mint -- --out "$WORK" --count "$TOKENS" \
  --issuer "$ISSUER" --ttl $((SOAK_SECONDS + 3600)) --expired "$TOKENS" --mongo-uri "$MONGODB_URI")
BIN="$TARGET_DIR/release/claimgate"
[ -x "$BIN" ] || die "no binary at $BIN"
# One changed character inside the signature (not the last one, whose low bits are padding)
# breaks it and nothing else.
awk '{ at = length($0) - 10; c = substr($0, at, 1); swap = (c == "A") ? "B" : "A";
       print substr($0, 1, at - 1) swap substr($0, at + 1) }' "$WORK/tokens.txt" >"$WORK/invalid.txt"
mv "$WORK/expired.txt" "$WORK/revoked.txt"
mv "$WORK/tokens.txt" "$WORK/valid.txt"
chmod 644 "$WORK"/*.txt "$WORK/jwks.json"

# ---------------------------------------------------------------- nginx: upstream + JWKS
mkdir -p "$WORK/nginx-tmp"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 100000000;
  client_body_temp_path $WORK/nginx-tmp/body;
  proxy_temp_path $WORK/nginx-tmp/proxy;
  fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
  scgi_temp_path $WORK/nginx-tmp/scgi;
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
"$NGINX" -t -q -p "$WORK" -e "$WORK/nginx.error.log" -c "$WORK/nginx.conf" || die "nginx config"
"$NGINX" -p "$WORK" -e "$WORK/nginx.error.log" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" 200 "upstream nginx"
wait_http "http://127.0.0.1:$JWKS_PORT/jwks.json" 200 "JWKS nginx"

# ---------------------------------------------------------------- claimgate
cat >"$WORK/claimgate.yaml" <<EOF
listen: 127.0.0.1:$CLAIMGATE_PORT
upstream: {url: "http://127.0.0.1:$UPSTREAM_PORT"}
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
verified_token_cache: {enabled: true, max_entries: 100000}
providers:
  - name: bench
    issuer: "$ISSUER"
    jwks_uri: "http://127.0.0.1:$JWKS_PORT/jwks.json"
    audience: [claimgate-bench]
    algorithms: [RS256]
    metadata_fields:
      - {name: name}
      - {name: email}
user_data:
  source: mongodb
  uri: "$MONGODB_URI"
  database: bench
  collection: users
  user_id_field: user_id
  required: true
  cache: {max_entries: 200000, ttl_seconds: 3600}
forward:
  user_header: X-Claimgate-User
  headers:
    X-User-Id: "%%user.id"
    X-User-Roles: {from: "%%user.custom_data.roles", encoding: csv}
rules:
  - match: {path_prefix: "/"}
    allow_when: {"%%user.custom_data.canRead": true}
EOF
RUST_LOG=warn "$BIN" --config "$WORK/claimgate.yaml" 2>"$WORK/claimgate.log" &
CLAIMGATE_PID=$!
PIDS+=("$CLAIMGATE_PID")
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 200 "claimgate readyz"
probe() { # token file → status of its first token
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $(head -n 1 "$1")" "http://127.0.0.1:$CLAIMGATE_PORT/"
}
[ "$(probe "$WORK/valid.txt")" = 200 ] || die "a valid token was not answered 200"
[ "$(probe "$WORK/invalid.txt")" = 401 ] || die "an invalid token was not answered 401"
[ "$(probe "$WORK/revoked.txt")" = 401 ] || die "a revoked (expired) token was not answered 401"

RELOAD=0
HELP=$("$BIN" --help 2>&1 || true)
if grep -qiE 'sighup|reload' <<<"$HELP"; then
  RELOAD=1
  log "reload: SIGHUP twice during the run"
else
  log "reload: not supported by this build"
fi

# ---------------------------------------------------------------- wrk script
cat >"$WORK/soak.lua" <<'EOF'
-- One token class per wrk process: tokens round-robin from args[1], expected status args[2].
-- Counts every other status by value (the common ones by name) and prints one RESULT line.
local threads = {}
local next_id = 0
local named = { 200, 401, 403, 429, 500, 502, 503, 504 }

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  prepared = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      prepared[#prepared + 1] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. line })
    end
  end
  expected = tonumber(args[2])
  count = #prepared
  position = (id * 997) % count
  for _, s in ipairs(named) do _G["s" .. s] = 0 end
  sother = 0
end

function request()
  position = position % count + 1
  return prepared[position]
end

function response(status, headers, body)
  if status ~= expected then
    local key = "s" .. status
    if _G[key] ~= nil then _G[key] = _G[key] + 1 else sother = sother + 1 end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, s in ipairs(named) do
    local n = 0
    for _, t in ipairs(threads) do n = n + (t:get("s" .. s) or 0) end
    if n > 0 then parts[#parts + 1] = s .. "x" .. n end
  end
  local other = 0
  for _, t in ipairs(threads) do other = other + (t:get("sother") or 0) end
  if other > 0 then parts[#parts + 1] = "otherx" .. other end
  local errors = e.connect + e.read + e.write + e.timeout
  if errors > 0 then parts[#parts + 1] = "socket_errorsx" .. errors end
  local unexpected = table.concat(parts, ",")
  if unexpected == "" then unexpected = "none" end
  io.write(string.format("RESULT requests=%d duration_us=%d p99_us=%d unexpected=%s\n",
    summary.requests, summary.duration, latency:percentile(99), unexpected))
end
EOF

# ---------------------------------------------------------------- user data updates
cat >"$WORK/updates.py" <<'EOF'
import random, sys, time
from pymongo import MongoClient
uri, count, every, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
users = MongoClient(uri).bench.users
done = 0
while time.time() < until:
    i = random.randrange(count)
    users.update_one({"user_id": f"user-{i:06}"},
                     {"$set": {"roles": ["reader", "bench", f"soak-{done}"], "canRead": True}})
    done += 1
    time.sleep(every)
print(done)
EOF

rss() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$CLAIMGATE_PID/status"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
metric() {
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# A short warm-up so the start figure is the steady state, not an empty process.
wrk -t1 -c"$VALID_CONNECTIONS" -d5s --timeout 5s -s "$WORK/soak.lua" \
  "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$WORK/valid.txt" 200 >/dev/null
RSS_START=$(rss VmRSS)
log "RSS after warm-up: $(mib "$RSS_START") MiB; soaking for $SOAK_SECONDS s"

end_at=$(($(date +%s) + SOAK_SECONDS))
"$PYTHON" "$WORK/updates.py" "$MONGODB_URI" "$TOKENS" "$UPDATE_EVERY" "$end_at" >"$WORK/updates.out" 2>&1 &
UPDATER=$!
PIDS+=("$UPDATER")

RELOADS_AT=("$((SOAK_SECONDS / 3))" "$((2 * SOAK_SECONDS / 3))")
RELOADS_DONE=0
RSS_MIDDLE=""
UNEXPECTED_TOTAL=0
ROWS=()
segment=0
soak_start=$(date +%s)
while :; do
  now=$(date +%s)
  left=$((end_at - now))
  [ "$left" -ge 1 ] || break
  seconds=$((left < 60 ? left : 60))
  segment=$((segment + 1))
  offset=$((now - soak_start))
  # Reloads due inside this segment are sent from the background at their time.
  if [ "$RELOAD" = 1 ]; then
    for at in "${RELOADS_AT[@]}"; do
      if [ "$at" -ge "$offset" ] && [ "$at" -lt $((offset + seconds)) ]; then
        (sleep $((at - offset)); kill -HUP "$CLAIMGATE_PID") &
        RELOADS_DONE=$((RELOADS_DONE + 1))
      fi
    done
  fi
  for class in valid invalid revoked; do
    connections=$BAD_CONNECTIONS expected=401
    [ "$class" = valid ] && connections=$VALID_CONNECTIONS expected=200
    wrk -t"$THREADS" -c"$connections" -d"${seconds}s" --timeout 5s -s "$WORK/soak.lua" \
      "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$WORK/$class.txt" "$expected" >"$WORK/wrk-$class-$segment.txt" 2>&1 &
    eval "WRK_$class=\$!"
  done
  # shellcheck disable=SC2154 # set by the eval above
  wait "$WRK_valid" "$WRK_invalid" "$WRK_revoked" || true
  kill -0 "$CLAIMGATE_PID" 2>/dev/null || die "claimgate exited during segment $segment: $(tail -n 5 "$WORK/claimgate.log")"
  row="| $segment | $offset–$((offset + seconds)) s"
  unexpected=""
  for class in valid invalid revoked; do
    line=$(grep '^RESULT ' "$WORK/wrk-$class-$segment.txt") || die "wrk ($class) printed no RESULT: $(cat "$WORK/wrk-$class-$segment.txt")"
    field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $line"; }
    p99=$(awk -v us="$(field p99_us)" 'BEGIN { printf "%.2f", us / 1000 }')
    if [ "$class" = valid ]; then
      rps=$(awk -v r="$(field requests)" -v d="$(field duration_us)" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
      row+=" | $rps | $p99"
    else
      row+=" | $p99"
    fi
    if [ "$(field unexpected)" != none ]; then
      unexpected+="$class: $(field unexpected); "
      UNEXPECTED_TOTAL=1
    fi
  done
  ROWS+=("$row | ${unexpected:-none} |")
  log "segment $segment: ${row#| } | ${unexpected:-no unexpected status}"
  if [ -z "$RSS_MIDDLE" ] && [ $(($(date +%s) - soak_start)) -ge $((SOAK_SECONDS / 2)) ]; then
    RSS_MIDDLE=$(rss VmRSS)
  fi
done
RSS_END=$(rss VmRSS)
RSS_PEAK=$(rss VmHWM)
wait "$UPDATER" 2>/dev/null || true
UPDATES=$(tail -n 1 "$WORK/updates.out")

echo
echo "claimgate soak — $(date -u +%Y-%m-%dT%H:%MZ), ${SOAK_SECONDS} s, $(nproc) cores shared by wrk, nginx, MongoDB and the proxy; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "valid: $VALID_CONNECTIONS connections, $TOKENS tokens round-robin (200 expected); invalid and revoked (expired): $BAD_CONNECTIONS connections each (401 expected)"
echo "user data updates: $UPDATES (one every ${UPDATE_EVERY} s); change events applied: $(metric claimgate_user_data_change_events_total)"
if [ "$RELOAD" = 1 ]; then echo "reloads: $RELOADS_DONE (SIGHUP)"; else echo "reload: not supported by this build"; fi
echo "RSS: start $(mib "$RSS_START") MiB, middle $(mib "${RSS_MIDDLE:-$RSS_END}") MiB, end $(mib "$RSS_END") MiB, peak $(mib "$RSS_PEAK") MiB"
echo
echo "| minute | window | valid req/s | valid p99 ms | invalid p99 ms | revoked p99 ms | unexpected statuses |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | --- |"
for row in "${ROWS[@]}"; do echo "$row"; done
log "done in $(($(date +%s) - started_at)) s"
[ "$UNEXPECTED_TOTAL" = 0 ] || { log "unexpected statuses seen (table above)"; exit 1; }
