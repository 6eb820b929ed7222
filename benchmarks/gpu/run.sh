#!/usr/bin/env bash
# Issue 29's ONE device call (at most 8 minutes on an H100), from the repository root, after
# `bash benchmarks/gpu/prepare.sh .gpu_out` on the CPU machine (DIR is carried to the device machine):
#   run(command="bash benchmarks/gpu/run.sh .gpu_out", carry=[".gpu_out"], timeout_s=540)
# 1. the PyTorch anchors (HF eager SDPA, torch.compile) -> DIR/torch.json; 2. our steps with the fused-attention
# checks first, one table of ratios (stdout, $OUT/report.txt, $OUT/results.json).
set -uo pipefail
DIR=${1:?usage: run.sh DIR}
START=$(date +%s)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader || true
timeout 200 python3 benchmarks/gpu/torch_bert.py "$DIR" --deadline_s 90 || echo "torch anchors: exit $?"
LEFT=$(( 450 - ($(date +%s) - START) ))
timeout $(( LEFT + 30 )) python3 benchmarks/gpu/run_steps.py "$DIR" --deadline_s "$LEFT" --iters 10 --jobs 3
