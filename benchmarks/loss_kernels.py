"""Benchmark the noise-weighted loss: eager PyTorch vs torch.compile vs the fused Triton kernel (CUDA).

    python benchmarks/loss_kernels.py                 # the full grid, appended to results/loss_kernels.csv
    python benchmarks/loss_kernels.py --quick         # two sizes, for a smoke test

For each provider, pass (fwd, bwd, fwd+bwd), dtype (fp32, bf16), batch (16, 64, 256) and per-sample
size (3·64² … 3·512²) it records the median time of triton.testing.do_bench, the bandwidth computed from
the bytes the pass must move, that bandwidth as a percentage of the device's measured copy bandwidth,
and the peak memory the pass allocates beyond its inputs. Bytes per element of the B×N inputs, s bytes
each: fwd reads p, x, ε (3s); bwd writes ∂p, ∂x from the inputs (5s: read three, write two); fwd+bwd
together need no more than the fused kernel's single pass (5s). All rows of one invocation come from one
device and one run, so ratios between providers are like for like.
"""
import argparse
import csv
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["device", "provider", "pass", "dtype", "batch", "numel_per_sample", "ms", "gbps", "pct_copy_bw",
           "peak_mem_mb"]
BYTES_PER_ELEMENT = {"fwd": 3, "bwd": 5, "fwd+bwd": 5}


def copy_bandwidth_gbps(device) -> float:
    """Measured device copy bandwidth (read + write) in GB/s, on a 1 GiB buffer."""
    from triton.testing import do_bench
    source = torch.empty(2**28, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    ms = do_bench(lambda: target.copy_(source))
    return 2 * source.numel() * source.element_size() / (ms * 1e-3) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two sizes and one batch only")
    parser.add_argument("--out", default=str(RESULTS / "loss_kernels.csv"), help="CSV to append to")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("loss_kernels.py: a CUDA GPU is needed to benchmark the kernel; no rows written.", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    from unified_latents.kernels import fused_noise_weighted_loss
    from unified_latents.loss import noise_weighted_loss_reference

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    copy_gbps = copy_bandwidth_gbps(device)
    print(f"{name}: measured copy bandwidth {copy_gbps:.0f} GB/s")
    compiled = torch.compile(noise_weighted_loss_reference)
    providers = {"eager": noise_weighted_loss_reference, "torch.compile": compiled, "triton": fused_noise_weighted_loss}
    sizes = [3 * 64**2, 3 * 512**2] if args.quick else [3 * 64**2, 3 * 128**2, 3 * 256**2, 3 * 512**2]
    batches = [64] if args.quick else [16, 64, 256]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for batch in batches:
            for numel in sizes:
                g = torch.Generator(device).manual_seed(0)
                p, x, eps = (torch.randn(batch, numel, device=device, generator=g).to(dtype) for _ in range(3))
                p.requires_grad_(True)
                x.requires_grad_(True)
                logsnr = torch.rand(batch, device=device, generator=g) * 20 - 10
                weight = torch.rand(batch, device=device, generator=g) + 0.5
                for provider, fn in providers.items():
                    def forward():
                        return fn(p, x, eps, logsnr, weight, "v")

                    def both():
                        forward().sum().backward()
                    loss = forward()
                    passes = {"fwd": forward,
                              "bwd": lambda: loss.backward(torch.ones_like(loss), retain_graph=True),
                              "fwd+bwd": both}
                    for pass_name, call in passes.items():
                        call()  # warm-up (and compilation)
                        torch.cuda.synchronize()
                        base = torch.cuda.memory_allocated(device)
                        torch.cuda.reset_peak_memory_stats(device)
                        call()
                        torch.cuda.synchronize()
                        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                        ms = do_bench(call, grad_to_none=[p, x])
                        moved = BYTES_PER_ELEMENT[pass_name] * batch * numel * p.element_size()
                        gbps = moved / (ms * 1e-3) / 1e9
                        rows.append({"device": name, "provider": provider, "pass": pass_name,
                                     "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                                     "numel_per_sample": numel, "ms": round(ms, 5), "gbps": round(gbps, 1),
                                     "pct_copy_bw": round(100 * gbps / copy_gbps, 1), "peak_mem_mb": round(peak_mb, 1)})
                        print(rows[-1])
                    del loss
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists() or out.stat().st_size == 0
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
