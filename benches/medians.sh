#!/usr/bin/env bash
# Prints the medians of the last `cargo bench --bench hot_path` run as a Markdown table, with the
# ratios the issue asks about (full verify vs the raw primitive of the same library).
#
#   cargo bench --bench hot_path && bash benches/medians.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${CARGO_TARGET_DIR:-$root/target}/criterion"
[ -d "$dir" ] || { echo "no criterion results under $dir: run cargo bench --bench hot_path" >&2; exit 1; }

python3 - "$dir" <<'EOF'
import json, os, sys

root = sys.argv[1]
med = {}
for group in sorted(os.listdir(root)):
    gdir = os.path.join(root, group)
    if group == "report" or not os.path.isdir(gdir):
        continue
    for name in sorted(os.listdir(gdir)):
        est = os.path.join(gdir, name, "new", "estimates.json")
        if os.path.exists(est):
            with open(est) as f:
                e = json.load(f)["median"]
            med[f"{group}/{name}"] = (e["point_estimate"], e["confidence_interval"])

def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"

print("| bench | median | 95% CI of the median |")
print("| --- | ---: | --- |")
for key, (ns, ci) in med.items():
    print(f"| `{key}` | {fmt(ns)} | {fmt(ci['lower_bound'])} – {fmt(ci['upper_bound'])} |")

print()
pairs = [
    ("verify_RS256/claimgate_verify", "verify_RS256/aws_lc_verify_sig", "RS256 full verify / RSA-2048 verify_sig (target ≤ 1.3)"),
    ("verify_RS256/jsonwebtoken_decode", "verify_RS256/aws_lc_verify_sig", "RS256 jsonwebtoken::decode / verify_sig"),
    ("verify_RS256/jsonwebtoken_decode", "verify_RS256/claimgate_verify", "RS256 jsonwebtoken::decode / claimgate verify"),
    ("verify_ES256/claimgate_verify", "verify_ES256/aws_lc_verify_sig", "ES256 full verify / verify_sig"),
    ("verify_EdDSA/claimgate_verify", "verify_EdDSA/aws_lc_verify_sig", "EdDSA full verify / verify_sig"),
    ("verify_HS256/claimgate_verify", "verify_HS256/aws_lc_hmac_verify", "HS256 full verify / hmac::verify"),
    ("rs256_backends/aws_lc_components_per_call", "rs256_backends/aws_lc_parsed_key", "aws-lc components per call / parsed key"),
    ("rs256_backends/ring_components_per_call", "rs256_backends/aws_lc_parsed_key", "ring components per call / aws-lc parsed key"),
    ("rs256_backends/ring_unparsed_pkcs1_per_call", "rs256_backends/aws_lc_parsed_key", "ring PKCS#1 per call / aws-lc parsed key"),
]
print("| ratio of medians | value |")
print("| --- | ---: |")
for a, b, label in pairs:
    if a in med and b in med:
        print(f"| {label} | {med[a][0] / med[b][0]:.2f} |")
EOF
