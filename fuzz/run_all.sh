#!/bin/sh
# Runs every fuzz target one after the other, each for FUZZ_SECONDS (default 600), niced, with a
# 2 GiB RSS limit; the libFuzzer log of each ends up in fuzz/logs/<target>.log.
# Usage (from the repository root): fuzz/run_all.sh [target ...]
set -eu
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-600}
targets=${*:-token jwks rule_expr config original_uri}
export RUSTC_BOOTSTRAP=1
cargo fuzz build
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Seeds are read, never written: new inputs go to corpus/<target>.
    nice -n 19 "$bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t" >"logs/$t.log" 2>&1 || true
    grep -E '^#[0-9]+ *DONE|^stat::number_of_executed_units|^==[0-9]+==|^SUMMARY|panicked' \
        "logs/$t.log" | head -n 8
done
