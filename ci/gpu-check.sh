#!/usr/bin/env bash
# kvbench's GPU check (issue 5): on a machine with an NVIDIA GPU, in under 5 minutes on one H100,
#   1. builds release,
#   2. compiles every kernel with NVRTC and verifies every CUDA workload against the f64
#      reference (cargo tests; a test that skips here is a failure: there is a GPU),
#   3. calibrates the GPU (copy bandwidth, cuBLAS GEMM),
#   4. times decode attention (contiguous and paged f16, int8, fp8-e4m3/token: the CUDA fp8 kernel keeps a scale per head vector) at 4K and 32K context,
#      batch 1 and 32, Llama-3-8B shapes (2 layers), each row verified first,
#   5. prints a short table last: GB/s, % of the measured copy bandwidth, TTFT, tokens/s, error,
#      and the issue's targets.
# The full CSV, logs and calibration go to $OUT when set (else target/gpu-check).
# No network: libnvrtc/libcublas are found among Python's nvidia packages or the CUDA toolkit,
# and cargo runs --offline (the crates must already be in ~/.cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-target/gpu-check}"
mkdir -p "$out"
say() { echo "[gpu-check $(date +%T)] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
start=$SECONDS

# ---- libraries --------------------------------------------------------------------------
# Directories that may hold CUDA 13 user-space libraries, most specific first.
lib_dirs() {
    [ -n "${KVBENCH_NVRTC_LIB:-}" ] && echo "${KVBENCH_NVRTC_LIB%/libnvrtc.so*}"
    python3 - 2>/dev/null <<'PY' || true
import importlib.util, os, sys
for name in ("nvidia",):
    spec = importlib.util.find_spec(name)
    for root in (spec.submodule_search_locations or []) if spec else []:
        for d, _, files in os.walk(root):
            if any(f.startswith(("libnvrtc.so", "libcublas.so")) for f in files):
                print(d)
PY
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/*/lib \
             /usr/lib/x86_64-linux-gnu; do
        [ -d "$d" ] && echo "$d"
    done
    true
}
find_lib() { # find_lib NAME: the first directory holding NAME
    local d
    while read -r d; do
        [ -e "$d/$1" ] && { echo "$d"; return 0; }
    done < <(lib_dirs)
    return 1
}
nvrtc_dir="$(find_lib libnvrtc.so.13)" || die "libnvrtc.so.13 not found in \$KVBENCH_NVRTC_LIB, \
Python's nvidia packages or /usr/local/cuda: install nvidia-cuda-nvrtc==13.0.88 (ci/install-nvrtc.sh) \
or the CUDA 13 toolkit"
say "libnvrtc.so.13 in $nvrtc_dir"
cublas_dir="$(find_lib libcublas.so.13)" || { cublas_dir=""; say "libcublas.so.13 not found: calibration will fail"; }
[ -n "$cublas_dir" ] && say "libcublas.so.13 in $cublas_dir"
export KVBENCH_NVRTC_LIB="$nvrtc_dir"
export LD_LIBRARY_PATH="$nvrtc_dir${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader \
    > "$out/nvidia-smi.txt" 2>&1 || true
say "GPU: $(head -n1 "$out/nvidia-smi.txt")"

# ---- 1. build -----------------------------------------------------------------------------
say "building release"
cargo build --release --offline --bin kvbench 2> "$out/build.log" || {
    tail -n 30 "$out/build.log" >&2
    grep -q "offline" "$out/build.log" && say "hint: this machine has no network; the crates must be in ~/.cargo already (or vendored: cargo vendor, then carry vendor/ and .cargo/config.toml)"
    die "release build"
}
cargo test --release --offline -p kvbench-workloads --no-run 2>> "$out/build.log" || { tail -n 30 "$out/build.log" >&2; die "test build"; }
say "built in $((SECONDS - start)) s"

# ---- 2. compile every kernel, verify every CUDA workload --------------------------------
say "NVRTC compile test and GPU verification (every strategy x dtype, shapes, edges)"
tests_log="$out/cuda-tests.log"
timeout 150 cargo test --release --offline -p kvbench-workloads \
    --test cuda_kernels_compile --test cuda_gpu -- --test-threads 1 > "$tests_log" 2>&1 \
    || { tail -n 40 "$tests_log" >&2; die "CUDA tests (log: $tests_log)"; }
timeout 60 cargo test --release --offline -p kvbench-workloads --lib cuda:: -- --test-threads 1 \
    >> "$tests_log" 2>&1 || { tail -n 40 "$tests_log" >&2; die "CUDA unit tests (log: $tests_log)"; }
# Only the no-driver test may skip here (it checks the error path, which needs no GPU).
skipped="$(grep "SKIPPED" "$tests_log" | grep -v "SKIPPED no-driver test" || true)"
if [ -n "$skipped" ]; then
    echo "$skipped" >&2
    die "a GPU test skipped on a GPU machine"
fi
grep -E "^test result" "$tests_log" >&2
copy_gbps="$(sed -n 's/.*copy_gbps=\([0-9.]*\).*/\1/p' "$tests_log" | head -n1)"
say "measured copy bandwidth (read + write): ${copy_gbps:-?} GB/s"

# ---- 3. calibrate through the CLI -------------------------------------------------------
cal="$out/calibration-cuda.json"
cal_args=()
if timeout 60 target/release/kvbench calibrate --backend cuda -o "$cal" > "$out/calibrate.log" 2>&1; then
    cal_args=(--calibration "$cal")
else
    say "kvbench calibrate --backend cuda failed (see $out/calibrate.log); % column uses ${copy_gbps:-nothing}"
fi

# ---- 4. time decode attention -----------------------------------------------------------
csv="$out/gpu-check.csv"
say "timing decode attention: contiguous/paged x f16/int8/fp8-e4m3/token x 4K/32K x batch 1/32"
timeout 240 target/release/kvbench run --backend cuda --workload attention --model llama3-8b \
    --layers 2 --strategy contiguous,paged --cache-dtype f16,int8,fp8-e4m3/token \
    --prompt 4096,32768 --gen 32 --batch 1,32 -r 3 --warmup 1 "${cal_args[@]}" \
    -o "$csv" --format none > "$out/run.log" 2>&1 || run_failed=1
[ -s "$csv" ] || { tail -n 30 "$out/run.log" >&2; die "kvbench run wrote no CSV (log: $out/run.log)"; }

# ---- 5. the table, last -------------------------------------------------------------------
say "done in $((SECONDS - start)) s; CSV: $csv"
python3 - "$csv" "${copy_gbps:-0}" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
copy = float(sys.argv[2] or 0)
def f(r, k):
    try: return float(r.get(k) or "nan")
    except ValueError: return float("nan")
print()
print(f"{'strategy':<11} {'dtype':<9} {'context':>7} {'batch':>5} {'GB/s':>8} {'% copy':>7} "
      f"{'TTFT ms':>9} {'tokens/s':>10} {'rel_error':>9} {'status':<8}")
best = {}
for r in rows:
    gbps = f(r, "achieved_gbps")
    pct = f(r, "pct_of_limit")
    if not pct == pct or pct <= 0:
        pct = 100 * gbps / copy if copy > 0 else float("nan")
    print(f"{r['strategy']:<11} {r['k_dtype']:<9} {r['prompt']:>7} {r['batch']:>5} {gbps:8.0f} "
          f"{pct:6.1f}% {f(r, 'ttft_ms'):9.2f} {f(r, 'tokens_per_s'):10.0f} "
          f"{f(r, 'rel_error'):9.1e} {r.get('status', ''):<8}")
    best[(r["strategy"], r["k_dtype"], r["prompt"], r["batch"])] = (gbps, pct, f(r, "tokens_per_s"))
print()
def target(ok, text):
    print(("MET   " if ok else "MISSED") + "  " + text)
for b in ("1", "32"):
    c = best.get(("contiguous", "f16", "32768", b)); p = best.get(("paged", "f16", "32768", b))
    if c and p:
        target(c[1] >= 80 and p[1] >= 80, f"32K batch {b}: contiguous {c[1]:.0f}% and paged {p[1]:.0f}% of copy bandwidth (>= 80%)")
        target(p[2] >= 0.9 * c[2], f"32K batch {b}: paged within 10% of contiguous ({p[2] / c[2] * 100:.0f}%)")
        for q in ("int8", "fp8-e4m3/token"):
            x = best.get(("paged", q, "32768", b))
            if x:
                target(x[2] > p[2], f"32K batch {b}: paged {q} faster than f16 ({x[2]:.0f} vs {p[2]:.0f} tokens/s)")
print("every row verified" if all(r.get("verified") in ("true", "True", "1") for r in rows)
      else "NOT every row verified: see status column")
PY
[ -z "${run_failed:-}" ] || die "kvbench run exited non-zero (log: $out/run.log)"
