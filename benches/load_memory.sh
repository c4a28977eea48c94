# Sourced by benches/load.sh after its table (uses its functions and variables); not run alone.
# shellcheck shell=bash

# Optional memory runs (MEMORY=1), every cache at its default bounds (DEFAULT_CACHES=1): what a
# new user gets. RSS is sampled while the load keeps running; the caches fill, then evict by bytes.
hit_ratio() { # hits metric, misses metric
  awk -v h="$(metric "$1")" -v m="$(metric "$2")" \
    'BEGIN { t = h + m; printf "%.1f%%", (t > 0 ? 100 * h / t : 0) }'
}

mib() { awk -v b="$(metric "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }

memory_run() { # label, token file, what
  local label=$1 tokens=$2 count
  count=$(wc -l <"$tokens")
  DEFAULT_CACHES=1 start_claimgate "memory-$label" true true
  [ "${MEM_PREFILL:-0}" = 1 ] && fill_user_data_cache "$tokens" "$MEM_TOKENS"
  log "memory ($label): $count tokens for ${MEM_DURATION}s, RSS every ${MEM_SAMPLE}s"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${MEM_DURATION}s" --timeout 2s -s "$WORK/tokens.lua" \
    "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$tokens" >"$WORK/wrk-memory-$label.txt" &
  MEM_WRK=$!
  echo
  echo "memory run ($label): $count distinct $3 tokens over $MEM_TOKENS users with a document each, ${MEM_DURATION}s of load, default cache bounds"
  echo
  echo "| t (s) | RSS MiB | token cache entries | token cache MiB | user data cache entries | user data cache MiB |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  local elapsed=0 rss
  while kill -0 "$MEM_WRK" 2>/dev/null && [ "$elapsed" -lt "$MEM_DURATION" ]; do
    sleep "$MEM_SAMPLE"
    elapsed=$((elapsed + MEM_SAMPLE))
    rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$CLAIMGATE_PID/status")
    echo "| $elapsed | $rss | $(metric claimgate_token_cache_entries) | $(mib claimgate_token_cache_bytes) | $(metric claimgate_user_data_cache_entries) | $(mib claimgate_user_data_cache_bytes) |"
  done
  wait "$MEM_WRK" || true
  local line
  line=$(grep '^RESULT ' "$WORK/wrk-memory-$label.txt") || die "memory: wrk printed no RESULT line"
  echo
  echo "peak RSS (VmHWM) $(peak_rss "$CLAIMGATE_PID") MiB; hit ratios: token cache $(hit_ratio claimgate_token_cache_hits_total claimgate_token_cache_misses_total), user data cache $(hit_ratio claimgate_user_data_cache_hits_total claimgate_user_data_cache_misses_total); wrk: $(sed 's/^RESULT //' <<<"$line")"
  if ! grep -Eq ' non2xx=0 ' <<<"$line " || ! grep -Eq ' socket_errors=0( |$)' <<<"$line "; then
    log "ERROR: memory run ($label) REFUSED: non-2xx responses or socket errors: $line"
    REFUSED=1
  fi
  stop_claimgate
}

if [ "$MEMORY" = 1 ]; then
  head -n "$MEM_TOKENS" "$WORK/all-tokens.txt" >"$WORK/mem-tokens.txt"
  memory_run "$MEM_TOKENS" "$WORK/mem-tokens.txt" RS256
  if [ "$MEM_MILLION" -gt 0 ]; then
    memory_run "$MEM_MILLION" "$WORK/es256-tokens.txt" ES256
  fi
fi
