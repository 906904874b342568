"""Benchmark the noise-weighted loss: eager PyTorch vs torch.compile vs the fused Triton kernel (CUDA).

    python benchmarks/loss_kernels.py                 # the full grid, appended to results/loss_kernels.csv
    python benchmarks/loss_kernels.py --quick         # two sizes, for a smoke test
    python benchmarks/loss_kernels.py --plot-only     # redraw results/loss_kernels.png from the CSV

For each provider, pass, dtype (fp32, bf16), batch (16, 64, 256) and per-sample size (3·64² … 3·512²) it records
the median time of triton.testing.do_bench (host work included), the median time of replaying the same call
captured in a CUDA graph (the GPU's time alone), the bandwidth computed from the bytes the pass must move as a
percentage of the device's copy bandwidth measured in the same run, and the peak memory the pass allocates
beyond its inputs. Passes: fwd; bwd (timed alone on a fresh graph each time; not graph-captured); fwd+bwd with
`loss.sum()`; fwd+bwd(mean) with `loss.mean()`, as training averages the per-sample losses. Bytes per element
of the B×N inputs, s bytes each: fwd reads p, x, ε (3s); bwd writes ∂p, ∂x from the inputs (5s: read three,
write two); fwd+bwd together need no more than the fused kernel's single pass (5s). All rows of one invocation
come from one device and one run, so ratios between providers are like for like.
"""
import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["run", "device", "provider", "pass", "dtype", "batch", "numel_per_sample", "ms", "gbps", "pct_copy_bw",
           "peak_mem_mb", "ms_cudagraph", "pct_copy_bw_cudagraph"]
BYTES_PER_ELEMENT = {"fwd": 3, "bwd": 5, "fwd+bwd": 5, "fwd+bwd(mean)": 5}


def copy_bandwidth_gbps(device) -> float:
    """Measured device copy bandwidth (read + write) in GB/s, on a 1 GiB buffer."""
    from triton.testing import do_bench
    source = torch.empty(2**28, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    ms = do_bench(lambda: target.copy_(source), return_mode="median")
    return 2 * source.numel() * source.element_size() / (ms * 1e-3) / 1e9


def time_backward(forward, leaves, reps: int = 20, warmup: int = 3) -> tuple[float, float]:
    """Median ms of `loss.backward(1/B)` alone — the incoming gradient a mean sends, so every provider's backward
    does its full work (with 1 the fused kernel's backward has nothing to do) — and its peak extra memory in MiB.
    Each repetition builds a fresh graph outside the timed region (do_bench cannot leave the forward out without
    retain_graph, which torch.compile's donated buffers refuse), flushes the L2 cache as do_bench does, then times
    the backward with CUDA events."""
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    events, peak_mb = [], 0.0
    for i in range(warmup + reps):
        for leaf in leaves:
            leaf.grad = None
        loss = forward()
        flush.zero_()
        torch.cuda.synchronize()
        if i == warmup - 1:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss.backward(torch.full_like(loss, 1 / loss.numel()))
        end.record()
        if i == warmup - 1:
            torch.cuda.synchronize()
            peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
        if i >= warmup:
            events.append((start, end))
        del loss
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events), peak_mb


def plot(csv_path: Path, png_path: Path) -> None:
    """Median ms of forward + backward against the elements per tensor, for the latest run in the CSV: one column
    of panels per dtype, one row per reduction (`loss.sum()`, `loss.mean()`), with the floor that the measured
    copy bandwidth sets for the 5 bytes per element the pass must move."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    frame = pd.read_csv(csv_path)
    if "run" in frame:  # rows of earlier runs (other devices, other kernel versions) are not mixed in
        runs = frame["run"].fillna("")
        frame = frame[runs == runs.max()]
    frame = frame.assign(elements=frame["batch"] * frame["numel_per_sample"])
    dtypes = sorted(frame["dtype"].unique())
    passes = ["fwd+bwd", "fwd+bwd(mean)"]
    fig, axes = plt.subplots(len(passes), len(dtypes), figsize=(5.5 * len(dtypes), 3.8 * len(passes)), sharey=True,
                             squeeze=False)
    for row_axes, pass_name in zip(axes, passes):
        for ax, dtype in zip(row_axes, dtypes):
            rows = frame[(frame["dtype"] == dtype) & (frame["pass"] == pass_name)]
            for provider, group in rows.groupby("provider"):
                timed = group.groupby("elements")["ms"].median()  # sizes with the same B·N: their median
                line, = ax.plot(timed.index, timed.values, "o-", label=f"{provider} (do_bench)")
                if "ms_cudagraph" in group and group["ms_cudagraph"].notna().any():
                    replayed = group.groupby("elements")["ms_cudagraph"].median()
                    ax.plot(replayed.index, replayed.values, "s:", color=line.get_color(),
                            label=f"{provider} (CUDA-graph replay: GPU time only)")
            floor = rows.groupby("elements").apply(lambda g: (g["ms"] * g["pct_copy_bw"] / 100).median())
            ax.plot(floor.index, floor.values, "k--", label="copy-bandwidth floor (5 bytes per element)")
            reduction = "loss.sum()" if pass_name == "fwd+bwd" else "loss.mean()"
            ax.set(xscale="log", yscale="log", xlabel="elements per tensor (batch × per-sample)",
                   title=f"{dtype}, forward + backward of {reduction}")
            ax.grid(True, which="both", alpha=0.3)
        row_axes[0].set_ylabel("median ms")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"noise-weighted loss on {frame['device'].iloc[0]}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    print(f"wrote {png_path}")


def time_cuda_graph(call, leaves, reps: int = 30) -> float:
    """Median ms of one replay of `call` captured in a CUDA graph: the GPU's time alone, without the host's Python,
    dispatch and launch work that `do_bench` includes. Warm-up on a side stream and capture follow PyTorch's recipe
    for capturing forward + backward; the L2 cache is flushed before each replay, as do_bench does."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            for leaf in leaves:
                leaf.grad = None
            call()
    torch.cuda.current_stream().wait_stream(stream)
    for leaf in leaves:
        leaf.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    events = []
    for i in range(reps + 3):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        if i >= 3:
            events.append((start, end))
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in events)
    for leaf in leaves:
        leaf.grad = None
    del graph
    return ms


def open_results(out: Path):
    "The CSV opened for appending, its header brought up to COLUMNS first (older files lack the CUDA-graph columns)."
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and out.stat().st_size > 0:
        with open(out, newline="") as handle:
            reader = csv.DictReader(handle)
            header, old_rows = reader.fieldnames, list(reader)
        if header != COLUMNS:
            with open(out, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows({key: row.get(key, "") for key in COLUMNS} for row in old_rows)
    new = not out.exists() or out.stat().st_size == 0
    handle = open(out, "a", newline="")  # each row is written when measured: a run cut short keeps its rows
    writer = csv.DictWriter(handle, fieldnames=COLUMNS)
    if new:
        writer.writeheader()
    return handle, writer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two sizes and one batch only")
    parser.add_argument("--out", default=str(RESULTS / "loss_kernels.csv"), help="CSV to append to")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench's timing budget per measurement (ms)")
    parser.add_argument("--no-cudagraph", action="store_true", help="skip the CUDA-graph replay timings")
    parser.add_argument("--plot-only", action="store_true", help="only draw results/loss_kernels.png from --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(Path(args.out), Path(args.out).with_suffix(".png"))
        return 0
    if not torch.cuda.is_available():
        print("loss_kernels.py: a CUDA GPU is needed to benchmark the kernel; no rows written.", file=sys.stderr)
        return 2
    from triton.testing import do_bench
    from unified_latents.kernels import fused_noise_weighted_loss
    from unified_latents.loss import noise_weighted_loss_reference

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # one id for every row of this invocation
    copy_gbps = copy_bandwidth_gbps(device)
    print(f"{name}: measured copy bandwidth {copy_gbps:.0f} GB/s", flush=True)
    torch._dynamo.config.cache_size_limit = 64  # one compiled graph per dtype and shape must not hit the limit
    compiled = torch.compile(noise_weighted_loss_reference)
    providers = {"eager": noise_weighted_loss_reference, "torch.compile": compiled, "triton": fused_noise_weighted_loss}
    sizes = [3 * 64**2, 3 * 512**2] if args.quick else [3 * 64**2, 3 * 128**2, 3 * 256**2, 3 * 512**2]
    batches = [64] if args.quick else [16, 64, 256]
    out = Path(args.out)
    handle, writer = open_results(out)
    count = 0
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

                    def both_mean():
                        forward().mean().backward()
                    try:
                        passes = {"fwd": forward, "bwd": None, "fwd+bwd": both, "fwd+bwd(mean)": both_mean}
                        for pass_name, call in passes.items():
                            if call is None:
                                ms, peak_mb = time_backward(forward, [p, x])
                            else:
                                call()  # warm-up (and compilation)
                                p.grad = x.grad = None
                                torch.cuda.synchronize()
                                base = torch.cuda.memory_allocated(device)
                                torch.cuda.reset_peak_memory_stats(device)
                                call()
                                torch.cuda.synchronize()
                                peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                                ms = do_bench(call, warmup=max(10.0, args.rep_ms / 4), rep=args.rep_ms,
                                              grad_to_none=[p, x], return_mode="median")
                            moved = BYTES_PER_ELEMENT[pass_name] * batch * numel * p.element_size()
                            gbps = moved / (ms * 1e-3) / 1e9
                            graph_ms = graph_pct = ""
                            if call is not None and not args.no_cudagraph:  # backward alone cannot be captured alone
                                try:
                                    graph_ms = time_cuda_graph(call, [p, x])
                                    graph_pct = round(100 * moved / (graph_ms * 1e-3) / 1e9 / copy_gbps, 1)
                                    graph_ms = round(graph_ms, 5)
                                except Exception as error:  # recorded as empty; the do_bench row still counts
                                    print(f"CUDA graph failed for {provider} {pass_name}: {type(error).__name__}: "
                                          f"{error}", flush=True)
                            row = {"run": run, "device": name, "provider": provider, "pass": pass_name,
                                   "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                                   "numel_per_sample": numel, "ms": round(ms, 5), "gbps": round(gbps, 1),
                                   "pct_copy_bw": round(100 * gbps / copy_gbps, 1), "peak_mem_mb": round(peak_mb, 1),
                                   "ms_cudagraph": graph_ms, "pct_copy_bw_cudagraph": graph_pct}
                            writer.writerow(row)
                            handle.flush()
                            count += 1
                            print(row, flush=True)
                    except Exception as error:  # a provider that fails is reported, the others still run
                        print(f"FAILED {provider} {dtype} batch {batch} numel {numel}: "
                              f"{type(error).__name__}: {error}", flush=True)
                    p.grad = x.grad = None
                del p, x, eps
                torch.cuda.empty_cache()
    handle.close()
    print(f"appended {count} rows to {out}")
    plot(out, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
