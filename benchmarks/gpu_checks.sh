#!/usr/bin/env bash
# Everything this project measures on a GPU, as steps sized for a short lease:
#     bash benchmarks/gpu_checks.sh OUT_DIR [STEP ...]     STEP: tests, bench, throughput, demo (default: tests bench)
# tests       tests/test_kernels_cuda.py: the compiled kernels against the float64 reference (limit 120 s);
# bench       benchmarks/loss_kernels.py: eager vs torch.compile vs Triton, do_bench and CUDA-graph replay timings
#             (limit 300 s);
# throughput  benchmarks/stage_one_throughput.py: images/s and MFU of an imagenet512 stage-1 step, compiled with
#             the reference loss (one graph) and with the fused kernel (seven graphs), then eager (limit 540 s;
#             each torch.compile of that step took about 3 minutes on an H200).
# demo        `ul_demo --device cuda`: the whole pipeline (stage 1 with bf16 autocast and the fused loss, latent cache,
#             stage 2, samples) on the embedded photos; its summaries, metrics and pictures are copied to
#             OUT_DIR/demo (limit 300 s).
# The default fits one device command (10 minutes at most); run throughput as a second command. Each step has its
# own time limit and writes under OUT_DIR as it goes, so a step cut short keeps what it measured.
# Copy the CSVs into benchmarks/results/ and redraw the plot with `python benchmarks/loss_kernels.py --plot-only`.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [tests] [bench] [throughput] [demo]}
shift
steps=${*:-tests bench}
for step in $steps; do
  case $step in tests|bench|throughput|demo) ;; *) echo "unknown step '$step': use tests, bench, throughput or demo" >&2; exit 2;;
  esac
done
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TRITON_INTERPRET=0
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv > "$out/env.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)" >> "$out/env.txt"
git log -1 --format='commit %H' >> "$out/env.txt" 2>/dev/null
cat "$out/env.txt"
for step in $steps; do
  case $step in
    tests)
      timeout 120 python3 -m pytest tests/test_kernels_cuda.py -q -p no:cacheprovider --tb=line \
          > "$out/cuda_tests.txt" 2>&1
      echo "GPU tests: exit $? at $(elapsed) s: $(tail -n 1 "$out/cuda_tests.txt")";;
    bench)
      timeout 300 python3 benchmarks/loss_kernels.py --rep-ms 40 --out "$out/loss_kernels.csv" \
          > "$out/loss_kernels.log" 2>&1
      echo "loss benchmark: exit $? at $(elapsed) s: $(grep -c . "$out/loss_kernels.csv") CSV lines"
      grep -v "^{" "$out/loss_kernels.log" | tail -n 5;;
    throughput)
      timeout 540 python3 benchmarks/stage_one_throughput.py --modes compile-reference-loss compile eager \
          --out "$out/stage_one_throughput.csv" > "$out/throughput.log" 2>&1
      echo "throughput: exit $? at $(elapsed) s"
      cat "$out/stage_one_throughput.csv" 2>/dev/null;;
    demo)  # the run folders stay outside OUT_DIR: their checkpoints are hundreds of MB
      runs=$(mktemp -d)
      timeout 300 python3 -c 'import sys; from unified_latents.cli import demo_main; sys.exit(demo_main())' \
          --out_dir "$runs" --device cuda --no_progress > "$out/demo.log" 2>&1
      echo "demo: exit $? at $(elapsed) s"
      (cd "$runs" && find . -maxdepth 2 -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.png' \) \
          -exec install -D {} "$out/demo/{}" \;)
      tail -n 4 "$out/demo.log";;
  esac
done
