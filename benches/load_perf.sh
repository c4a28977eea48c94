# Sourced by benches/load.sh after its table (uses its functions and variables); not run alone.
# shellcheck shell=bash

# Optional profile (PERF=1).
# Separate runs after the table, so profiling never skews it: context switches per request
# (nginx-plain vs claimgate) with `perf stat`, then where claimgate's CPU goes with `perf record`.
perf_load() { # url, token file → starts a 12 s wrk in the background, sets WRK_PID and WRK_OUT
  WRK_OUT="$WORK/perf-wrk-$RANDOM.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d12s --timeout 2s -s "$WORK/tokens.lua" "$1" -- "$2" >"$WRK_OUT" &
  WRK_PID=$!
  sleep 1
}
# perf report lines ("  1.23%  dso  [.] symbol") → percent per component, largest first.
by_component() {
  awk '{ pct = $1; sub("%", "", pct); dso = $2; $1 = $2 = $3 = ""; sym = $0; c = "other user space"
    if (dso ~ /kernel/) c = "kernel"
    else if (dso ~ /libc/) c = (sym ~ /malloc|free|realloc/) ? "libc malloc/free" : "libc other"
    else if (sym ~ /quick_cache|moka|crossbeam|quanta|tagptr/) c = "caches (quick_cache, moka)"
    else if (sym ~ /aws_lc/) c = "aws-lc (RSA, SHA-256)"
    else if (sym ~ /hyper_util/) c = "hyper-util client pool"
    else if (sym ~ /hyper|httparse/) c = "hyper, httparse"
    else if (sym ~ /tokio|mio/) c = "tokio, mio"
    else if (sym ~ /http::|bytes::/) c = "http, bytes (header types)"
    else if (sym ~ /claimgate/) c = "claimgate own code"
    sum[c] += pct }
    END { for (c in sum) printf "%6.2f%%  %s\n", sum[c], c }' | sort -rn
}
perf_stat_row() { # label, url, token file, pids...
  local label=$1 url=$2 tokens=$3 stat rps pids
  shift 3
  pids=$(for p in "$@"; do echo "$p"; ps -o pid= --ppid "$p" || true; done | tr -d ' ' | paste -sd,)
  perf_load "$url" "$tokens"
  stat=$(perf stat -x, -e context-switches,cpu-migrations,task-clock -p "$pids" -- sleep 10 2>&1 >/dev/null || true)
  wait "$WRK_PID" || true
  rps=$(sed -E -n 's/^Requests\/sec: +([0-9.]+).*/\1/p' "$WRK_OUT")
  awk -F, -v label="$label" -v rps="$rps" '
    $3 == "context-switches" { cs = $1 } $3 == "cpu-migrations" { mig = $1 } $3 ~ /^task-clock/ { ms = $1 }
    END { n = rps * 10; if (n > 0) printf "| %s | %.0f | %.2f | %.3f | %.1f |\n", label, rps, cs / n, mig / n, ms * 1000 / n }' <<<"$stat"
}
if [ "$PERF" = 1 ]; then
  echo
  echo "perf stat over 10 s of the same load (per request; proxy processes only)"
  echo
  echo "| proxy | req/s | context switches/req | CPU migrations/req | CPU µs/req |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  perf_stat_row nginx-plain "http://127.0.0.1:$NGINX_PORT/" "$WORK/tokens.txt" "$NGINX_PROXY_PID"
  for mode in true false; do
    start_claimgate "stat-cache-$mode" "$mode"
    perf_stat_row "claimgate (cache $mode)" "http://127.0.0.1:$CLAIMGATE_PORT/" "$WORK/tokens.txt" "$CLAIMGATE_PID"
    stop_claimgate
  done
  for mode in false true; do
    start_claimgate "perf-cache-$mode" "$mode"
    log "perf: profiling claimgate (cache $mode) for 10 s under the same load"
    perf_load "http://127.0.0.1:$CLAIMGATE_PORT/" "$WORK/tokens.txt"
    perf record -q -F 499 -o "$WORK/perf-cache-$mode.data" -p "$CLAIMGATE_PID" -- sleep 10 2>/dev/null || log "perf record failed"
    wait "$WRK_PID" || true
    echo
    echo "perf record: claimgate, verified_token_cache.enabled: $mode — CPU by binary, then top symbols by self time"
    echo '```'
    perf report -q -g none -i "$WORK/perf-cache-$mode.data" --no-children --sort dso --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | head -n 4 || true
    echo
    perf report -q -g none -i "$WORK/perf-cache-$mode.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | cut -c1-150 | head -n 30 || true
    echo
    echo "by component (all samples, symbols grouped by crate):"
    perf report -q -g none -i "$WORK/perf-cache-$mode.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | by_component || true
    echo '```'
    stop_claimgate
  done
fi

