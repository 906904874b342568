#!/usr/bin/env bash
# Everything this project measures on a GPU, in one command sized for a short lease (about 9 minutes on an H200):
#     bash benchmarks/gpu_checks.sh OUT_DIR
# 1. tests/test_kernels_cuda.py: the compiled kernels against the float64 reference;
# 2. benchmarks/loss_kernels.py: eager vs torch.compile vs Triton, do_bench and CUDA-graph replay timings;
# 3. benchmarks/stage_one_throughput.py: images/s and MFU of an imagenet512 stage-1 step: eager, compiled, and
#    compiled with the reference loss instead of the fused kernel (one graph instead of seven).
# Each step has its own time limit and writes under OUT_DIR as it goes, so a step cut short keeps what it measured
# (each torch.compile of the imagenet512 step took about 3 minutes on an H200).
# Copy the CSVs into benchmarks/results/ and redraw the plot with `python benchmarks/loss_kernels.py --plot-only`.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv > "$out/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)" >> "$out/env.txt"
cat "$out/env.txt"
timeout 120 python3 -m pytest tests/test_kernels_cuda.py -q -p no:cacheprovider --tb=line > "$out/cuda_tests.txt" 2>&1
echo "GPU tests: exit $? at $(elapsed) s: $(tail -n 1 "$out/cuda_tests.txt")"
timeout 240 python3 benchmarks/loss_kernels.py --rep-ms 40 --out "$out/loss_kernels.csv" > "$out/loss_kernels.log" 2>&1
echo "loss benchmark: exit $? at $(elapsed) s: $(grep -c . "$out/loss_kernels.csv") CSV lines"
grep -v "^{" "$out/loss_kernels.log" | tail -n 5
timeout 420 python3 benchmarks/stage_one_throughput.py --modes eager compile compile-reference-loss \
    --out "$out/stage_one_throughput.csv" > "$out/throughput.log" 2>&1
echo "throughput: exit $? at $(elapsed) s"
cat "$out/stage_one_throughput.csv" 2>/dev/null
