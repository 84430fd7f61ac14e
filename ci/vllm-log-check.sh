#!/usr/bin/env bash
# kvbench's token capacity against the "GPU KV cache size" of the vLLM startup logs shipped
# in tests/fixtures/vllm-logs (README.md there cites each). Prints a markdown table:
#   - "from GPU": kvbench sizes the deployment from the GPU, config and weight dtype alone
#     (weights, vLLM's reserve model, gpu_memory_utilization); only where the log's GPU is known;
#   - "given KV memory": kvbench is handed the logged "Available KV cache memory" (--kv-budget
#     path): what is left is block rounding and the log's 2-decimal GiB.
# A benchmark, not a test: it reports errors, it does not fail on them.
#   usage: ci/vllm-log-check.sh            (builds target/release/kvbench if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/kvbench
[ -x "$bin" ] || cargo build --release -q
logs=tests/fixtures/vllm-logs
# file | extra flags | GPU known from the issue
cases=(
  "qwen3-14b-lmcache-1739.log|--config $logs/qwen3-14b-config.json --gpu h100|no"
  "qwen3-235b-fp8-tp4-vllm-21348.log|--gpu h100|yes"
  "fp8-kv-100k-vllm-25350.log|--model qwen3-30b-a3b --cache-dtype fp8 --gpu h100|no"
  "deepseek-v2-lite-tp2-pp2-l4-vllm-20665.log|--gpu l4|yes"
  "qwen3-30b-a3b-tp4-a10-vllm-17469.log|--model qwen3-30b-a3b --tp 4 --gpu a10|yes"
  "qwen3-8b-a5000-lmcache-3430.log|--model qwen3-8b --gpu rtx3090|no"
)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "| log | model | logged tokens | kvbench from GPU | error | kvbench given KV memory | error |"
echo "|---|---|---:|---:|---:|---:|---:|"
for c in "${cases[@]}"; do
  IFS='|' read -r file flags gpu_known <<<"$c"
  # shellcheck disable=SC2086
  "$bin" plan --vllm-log "$logs/$file" $flags --format csv >"$tmp/out.csv"
  python3 - "$tmp/out.csv" "$file" "$gpu_known" <<'PY' >>"$tmp/rows"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
get = lambda f: next((r for r in rows if r["figure"] == f), None)
free, given = get("GPU KV cache size (tokens)"), get("GPU KV cache size, from the logged KV memory")
pct = lambda r: f"{100 * float(r['diff']):+.2f}%" if r and r["diff"] else "n/a"
known = sys.argv[3] == "yes"
print("|".join(["", sys.argv[2], rows[0]["model"], free["logged"] if free else "?",
    free["kvbench"] if free and known else "(GPU not logged)", pct(free) if known else "n/a",
    given["kvbench"] if given else "n/a", pct(given), ""]))
PY
done
cat "$tmp/rows"
python3 - "$tmp/rows" <<'PY'
import statistics, sys
free, given = [], []
for line in open(sys.argv[1]):
    cells = line.strip().strip("|").split("|")
    for col, out in ((4, free), (6, given)):
        if cells[col].endswith("%"):
            out.append(abs(float(cells[col].rstrip("%"))))
for name, xs in (("from GPU", free), ("given KV memory", given)):
    if xs:
        print(f"\n{name}: {len(xs)} case(s), median |error| {statistics.median(xs):.2f}%, max {max(xs):.2f}%")
PY
