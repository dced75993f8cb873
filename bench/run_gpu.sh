#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 6 minutes: bench/run_gpu.py says what, in which order, with
# which limits. Exits 1 if any step failed, timed out or did not run. Logs go to OUT_DIR (default $OUT, else
# bench/gpu-out): machine.txt, one file per step, summary.txt.
#
#     bash bench/run_gpu.sh [OUT_DIR]
cd "$(dirname "$0")/.." || exit 1
exec python3 bench/run_gpu.py "$@"
