#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 9.7 minutes: the CUDA correctness checks first (timings are
# worth nothing if they fail), then the benchmarks, most important first: decode per step against the roofline
# (batch 8 and 64, LoRA on and off, both samplers' mismatch with the learner), kernels per step from the CUDA
# profiler and the attention backend, one paper-config GRPO step with each sampler, data parallel over every GPU
# (all-reduce timing, one process = N processes). Each step has its own time
# limit, so one that hangs cannot take the others with it. Logs go to OUT_DIR (default $OUT, else bench/gpu-out).
#
#     bash bench/run_gpu.sh [OUT_DIR]
set -u
out=${1:-${OUT:-bench/gpu-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $* (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    grep -v "Writing model shards\|Loading weights" "$out/$name.txt" | tail -n 40
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/machine.txt"

step cuda_checks 110 python3 bench/cuda_checks.py
step decode 160 python3 bench/bench_decode.py --device cuda
step count_kernels 90 python3 bench/count_kernels.py --device cuda
step paper_step 60 python3 bench/bench_paper_step.py --device cuda
step paper_step_merged 50 python3 bench/bench_paper_step.py --device cuda --sampler merged
# Data parallel over every GPU here (NCCL; a single-GPU machine runs it with one process): the all-reduce of the
# LoRA gradient, then a few demo steps under torchrun whose update must equal the one-process run's.
gpus=$(nvidia-smi -L | wc -l)
step allreduce 40 torchrun --standalone --nproc_per_node "$gpus" bench/bench_allreduce.py --device cuda
step dp_demo 70 python3 bench/dp_check.py --device cuda --nproc "$gpus"
