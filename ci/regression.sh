#!/usr/bin/env bash
# The quick regression suite that .ci/run executes after the tests (issue 6).
#
# 1. Runs a small `kvbench run` matrix (well under a minute on 2 idle cores, under 3 when the
#    machine is shared): decoder and attention workloads × none/contiguous/paged × f16/int8/
#    int4 × two prompt lengths, on one layer of GPT-2's shape.
# 2. Compares it with the committed baseline results/baseline/ci-quick.csv:
#    - exact metrics (bytes allocated/used/predicted, bits per element, verified, status)
#      must match, error metrics (rel_error, cosine, error_bound) stay within tolerance;
#    - timing only through ratios inside each run (paged/contiguous, int8/f16, cache/none
#      ITL, pct_of_limit; see ci/thresholds.toml), which hold on a noisy shared machine
#      where absolute times do not.
# 3. Exits non-zero, with the table of what regressed, when a check fails or a workload
#    fails verification.
#
# Usage: ci/regression.sh                    run and gate
#        ci/regression.sh --update-baseline  run and make this run the new baseline
# Environment: KVBENCH (binary; default: build target/debug/kvbench, which `cargo test`
# has already built), KVBENCH_CI_OUT (run CSV; default results/runs/ci-quick.csv).
set -euo pipefail
cd "$(dirname "$0")/.."

BASELINE=results/baseline/ci-quick.csv
THRESHOLDS=ci/thresholds.toml
OUT=${KVBENCH_CI_OUT:-results/runs/ci-quick.csv}
MATRIX=(
  --model gpt2 --layers 1
  --workload decoder,attention
  --strategy none,contiguous,paged
  --cache-dtype f16,int8,int4
  --prompt 32,128 --gen 8 --batch 1
  -r 3 --warmup 1 --threads 2 --seed 0
)

update=0
case "${1:-}" in
  --update-baseline) update=1 ;;
  "") ;;
  *) echo "usage: ci/regression.sh [--update-baseline]" >&2; exit 2 ;;
esac

if [[ -z "${KVBENCH:-}" ]]; then
  cargo build --quiet --bin kvbench
  KVBENCH=target/debug/kvbench
fi
mkdir -p "$(dirname "$OUT")"

echo "== kvbench regression suite: ${MATRIX[*]}"
start=$SECONDS
run_status=0
timeout 900 "$KVBENCH" run "${MATRIX[@]}" -o "$OUT" --format table || run_status=$?
echo "== suite ran in $((SECONDS - start)) s (exit $run_status), wrote $OUT"

if [[ $update == 1 ]]; then
  if [[ $run_status != 0 ]]; then
    echo "regression suite: not updating the baseline from a run that failed (exit $run_status)" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$BASELINE")"
  cp "$OUT" "$BASELINE"
  echo "== baseline updated: $BASELINE"
  exit 0
fi

compare_status=0
"$KVBENCH" compare "$BASELINE" "$OUT" --thresholds "$THRESHOLDS" --timing ratios \
  || compare_status=$?

if [[ $run_status != 0 ]]; then
  echo "regression suite: FAILED: kvbench run exited $run_status (a workload failed verification or could not run; see the status and detail columns of $OUT)" >&2
  exit 1
fi
if [[ $compare_status != 0 ]]; then
  echo "regression suite: FAILED: the run regressed against $BASELINE (table above); if the change is intended, run ci/regression.sh --update-baseline and commit $BASELINE" >&2
  exit 1
fi
echo "regression suite: passed"
