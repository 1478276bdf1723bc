#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow real-model tests included.
#   bash scripts/test.sh [extra pytest arguments, e.g. -m "not slow"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
# security lint first: any new bandit finding fails the run (config in pyproject.toml [tool.bandit];
# a justified finding carries `# nosec BXXX  # reason` on its line)
.venv/bin/python -m bandit -c pyproject.toml -r audit probes reports dashboard -q
set +e
.venv/bin/python -m pytest -p no:cacheprovider --timeout=1200 -ra --durations=25 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
