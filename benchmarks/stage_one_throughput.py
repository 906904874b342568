"""Images per second and model FLOP utilisation (MFU) of one stage-1 training step on a CUDA GPU.

    python benchmarks/stage_one_throughput.py --preset imagenet512 --batch 16 8 4

The step is the one `fit` runs: bf16 autocast, the stage-1 loss (encoder, prior ELBO, decoder ELBO with the fused
loss kernel), backward, gradient clipping and AdamW. The first batch size that fits is timed eagerly and then
under torch.compile. MFU = training FLOPs per image (the dry run's count: linear, convolution and attention
layers, 3 × forward) × images/s ÷ the peak bf16 rate. Two peaks are reported: the datasheet's dense bf16 rate
(989 TFLOP/s for H100/H200 SXM; pass --peak-tflops for another card) and a large bf16 matrix product measured
in the same run. Rows are appended to results/stage_one_throughput.csv.
"""
import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["device", "preset", "mode", "batch", "steps", "images_per_s", "train_tflops_per_image", "achieved_tflops",
           "mfu_datasheet_pct", "mfu_measured_matmul_pct", "peak_mem_gib", "first_step_s"]


def matmul_tflops(device) -> float:
    "bf16 8192³ matrix product rate on random data, TFLOP/s (median of do_bench)."
    from triton.testing import do_bench
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    ms = do_bench(lambda: a @ b, return_mode="median")
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="imagenet512")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 8, 4], help="micro-batches to try, largest first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    parser.add_argument("--modes", nargs="+", default=["eager", "compile"],
                        choices=["eager", "compile", "compile-reference-loss"],
                        help="compile-reference-loss: torch.compile with the PyTorch reference loss instead of the "
                             "fused kernel (one graph instead of seven: is that faster for the whole step?)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="datasheet dense bf16 TFLOP/s")
    parser.add_argument("--out", default=str(RESULTS / "stage_one_throughput.csv"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("stage_one_throughput.py needs a CUDA GPU; nothing measured.", file=sys.stderr)
        return 2
    from unified_latents.model import UnifiedLatents, model_summary
    from unified_latents.config import make_config

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    config = make_config(args.preset)
    with torch.device("meta"):
        flops = model_summary(UnifiedLatents(config))["total"]["train_flops_per_image"]
    measured_peak = matmul_tflops(device)
    print(f"{name}: bf16 matmul {measured_peak:.0f} TFLOP/s measured; {args.preset}: "
          f"{flops / 1e9:.0f} training GFLOPs per image", flush=True)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = UnifiedLatents(config).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)

    def step(network, batch):
        images = torch.rand(batch, 3, config.image_size, config.image_size, device=device) * 2 - 1
        noise = model.draw_noise(batch, device=device)
        with autocast:
            loss = network(images, noise=noise).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batch = None
    for candidate in args.batch:  # the largest micro-batch that fits, found eagerly
        try:
            step(model, candidate)
            torch.cuda.synchronize()
            batch = candidate
            break
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            print(f"batch {candidate}: out of memory", flush=True)
    if batch is None:
        print("no batch size fitted", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists() or out.stat().st_size == 0
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        backend = os.environ.get("UL_LOSS_BACKEND")  # the caller's choice, for every mode but the reference one
        for mode in args.modes:
            if mode == "compile-reference-loss":
                os.environ["UL_LOSS_BACKEND"] = "reference"
            elif backend is None:
                os.environ.pop("UL_LOSS_BACKEND", None)
            else:
                os.environ["UL_LOSS_BACKEND"] = backend
            torch._dynamo.reset()  # the backend is read at trace time: no graph of another mode may be reused
            network = torch.compile(model) if mode.startswith("compile") else model
            torch.cuda.reset_peak_memory_stats(device)
            begin = time.perf_counter()
            step(network, batch)  # warm-up: compilation, autotuning, allocator
            torch.cuda.synchronize()
            first = time.perf_counter() - begin
            step(network, batch)
            torch.cuda.synchronize()
            begin = time.perf_counter()
            for _ in range(args.steps):
                step(network, batch)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - begin
            images_per_s = batch * args.steps / seconds
            achieved = flops * images_per_s / 1e12
            row = {"device": name, "preset": args.preset, "mode": f"bf16 {mode}", "batch": batch, "steps": args.steps,
                   "images_per_s": round(images_per_s, 2), "train_tflops_per_image": round(flops / 1e12, 3),
                   "achieved_tflops": round(achieved, 1),
                   "mfu_datasheet_pct": round(100 * achieved / args.peak_tflops, 1),
                   "mfu_measured_matmul_pct": round(100 * achieved / measured_peak, 1),
                   "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1),
                   "first_step_s": round(first, 1)}
            writer.writerow(row)
            handle.flush()
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
