#!/usr/bin/env bash
# The throughput benchmarks on a CUDA machine, one table at the end, under 10 minutes on one GPU.
#   bash benchmarks/gpu.sh            (after scripts/setup.sh with TORCH_SPEC=skip and a CUDA torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for GPUs')"
# CrowS-Pairs, full file, batched vs naive, MFU against the GPU's measured fp32 GEMM rate, scaling
timeout 220 "$PY" benchmarks/bench_crows_pairs.py --device cuda --pairs 1508 --naive-pairs 32 --scaling \
  --models bert-base,gpt2-base,smollm2-135m | tee benchmarks/results/gpu_crows_pairs.txt
# every probe and explainer on bert-base (random) and smollm2-135m: items/s, MFU, speed-up over the
# unbatched reference, scaling (quick: n and 10n items); ~4 min on one GPU
# (results are saved after each model, so a run stopped by the time limit still leaves its table)
timeout 200 "$PY" benchmarks/bench_suite.py --device cuda --quick | tee benchmarks/results/gpu_suite.txt \
  || echo "bench_suite.py stopped (time limit?): the table below is what it finished"
# bf16 / fp16 against fp32 per probe (audit/precision.py's table was measured on CPU; GPU kernels
# accumulate differently): results/dtype_cuda.json
timeout 120 "$PY" benchmarks/bench_dtype.py --device cuda --items 128 | tee benchmarks/results/gpu_dtype.txt \
  || echo "bench_dtype.py stopped (time limit?)"
"$PY" - <<'PY'
import json
from benchmarks.common import table
s = json.load(open("benchmarks/results/suite_cuda.json"))
print(f"\nGPU fp32 GEMM: {s['matmul_gflops']:.0f} GFLOP/s; every probe and explainer (bench_suite.py --quick)")
print(table(s["rows"], ["probe/method", "model", "item", "items", "items/s", "naive items/s", "speed-up", "max |diff|",
                   "MFU", "note"]))
d = json.load(open("benchmarks/results/crows_pairs_cuda.json"))
print(f"\nGPU fp32 GEMM: {d['matmul_gflops']:.0f} GFLOP/s")
print(table(d["rows"], ["model", "kind", "mode", "pairs_batched", "batched_pairs_per_s", "naive_pairs_per_s", "speedup",
                        "max_abs_pair_score_diff", "mfu_vs_matmul"]))
PY
