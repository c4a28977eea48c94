# Sourced by benches/load.sh after its table (uses its functions and variables); not run alone.
# shellcheck shell=bash

# Optional memory run (MEMORY=1).
# MEM_TOKENS distinct tokens (each user with a document) through claimgate with user data on,
# so that both caches hold MEM_TOKENS entries; RSS is sampled while the load keeps running.
if [ "$MEMORY" = 1 ]; then
  head -n "$MEM_TOKENS" "$WORK/all-tokens.txt" >"$WORK/mem-tokens.txt"
  TOKEN_CACHE_ENTRIES=$((MEM_TOKENS * 2)) start_claimgate memory true true
  [ "${MEM_PREFILL:-0}" = 1 ] && fill_user_data_cache "$WORK/mem-tokens.txt" "$MEM_TOKENS"
  log "memory: $MEM_TOKENS tokens and user documents for ${MEM_DURATION}s, RSS every ${MEM_SAMPLE}s"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${MEM_DURATION}s" --timeout 2s -s "$WORK/tokens.lua" \
    "http://127.0.0.1:$CLAIMGATE_PORT/" -- "$WORK/mem-tokens.txt" >"$WORK/wrk-memory.txt" &
  MEM_WRK=$!
  echo
  echo "memory run: $MEM_TOKENS distinct RS256 tokens, one cached user document each, ${MEM_DURATION}s of load"
  echo
  echo "| t (s) | RSS MiB | verified-token cache entries | user data cache entries |"
  echo "| ---: | ---: | ---: | ---: |"
  elapsed=0
  while kill -0 "$MEM_WRK" 2>/dev/null && [ "$elapsed" -lt "$MEM_DURATION" ]; do
    sleep "$MEM_SAMPLE"
    elapsed=$((elapsed + MEM_SAMPLE))
    rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$CLAIMGATE_PID/status")
    echo "| $elapsed | $rss | $(metric claimgate_token_cache_entries) | $(metric claimgate_user_data_cache_entries) |"
  done
  wait "$MEM_WRK" || true
  line=$(grep '^RESULT ' "$WORK/wrk-memory.txt") || die "memory: wrk printed no RESULT line"
  echo
  echo "peak RSS (VmHWM) $(peak_rss "$CLAIMGATE_PID") MiB; wrk: $(sed 's/^RESULT //' <<<"$line")"
  if ! grep -Eq ' non2xx=0 ' <<<"$line " || ! grep -Eq ' socket_errors=0( |$)' <<<"$line "; then
    log "ERROR: memory run REFUSED: non-2xx responses or socket errors: $line"
    REFUSED=1
  fi
  stop_claimgate
fi

