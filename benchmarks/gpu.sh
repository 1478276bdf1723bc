#!/usr/bin/env bash
# The throughput benchmarks on a CUDA machine, one table at the end, under 10 minutes on one GPU.
#   bash benchmarks/gpu.sh            (after scripts/setup.sh with TORCH_SPEC=skip and a CUDA torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for GPUs')"
# CrowS-Pairs, full file, batched vs naive, MFU against the GPU's measured fp32 GEMM rate, scaling
timeout 480 "$PY" benchmarks/bench_crows_pairs.py --device cuda --pairs 1508 --naive-pairs 32 --scaling \
  --models bert-base,gpt2-base,smollm2-135m | tee benchmarks/results/gpu_crows_pairs.txt
"$PY" - <<'PY'
import json
from benchmarks.common import table
d = json.load(open("benchmarks/results/crows_pairs_cuda.json"))
print(f"\nGPU fp32 GEMM: {d['matmul_gflops']:.0f} GFLOP/s")
print(table(d["rows"], ["model", "kind", "pairs_batched", "batched_pairs_per_s", "naive_pairs_per_s", "speedup",
                        "max_abs_pair_score_diff", "mfu_vs_matmul"]))
PY
