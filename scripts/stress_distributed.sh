#!/usr/bin/env bash
# Run every two-process (torchrun, gloo on CPU) test N times in a row and count the runs.
#   bash scripts/stress_distributed.sh 50            # prints "50 passed, 0 failed" when all pass
# Each run is one pytest session over tests/test_distributed.py (slow tests included); a run
# counts as failed when any of its tests fails. The log of a failed run is kept in
# stress-logs/run-<i>.log (its torchrun output names the rank, its exit signal and the step).
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: stress_distributed.sh N}
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg PYTHONFAULTHANDLER=1
mkdir -p stress-logs
pass=0
fail=0
for i in $(seq 1 "$N"); do
  start=$(date +%s)
  if "$PY" -m pytest -p no:cacheprovider -q -x tests/test_distributed.py > "stress-logs/run-$i.log" 2>&1; then
    pass=$((pass + 1))
    rm -f "stress-logs/run-$i.log"
    echo "run $i/$N: passed ($(( $(date +%s) - start )) s)"
  else
    fail=$((fail + 1))
    echo "run $i/$N: FAILED ($(( $(date +%s) - start )) s) — stress-logs/run-$i.log"
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
