"""UL's stage-1 models against JPEG and WebP on the held-out photos, whole photo in one pass, at the 256-pixel scale.

    python benchmarks/rate_distortion.py --run runs/demo [--run other_run ...] [--sweep] [--decodes 1,8]
                                         [--temperatures 1,0]

For each model and photo: the rate (the prior's bound, bits per pixel), PSNR and coarse PSNR (16×16 block means) of
one decode (a sample), of the mean of K decodes, and of one decode at each lower temperature (0: from zero noise); for each codec, a quality sweep on real files (Pillow: JPEG optimised, WebP
method 6). Writes benchmarks/results/rate_distortion.csv (one row per model, photo and decode count, with the codecs
at exactly UL's rate), rate_distortion_codecs.csv (the codec sweeps) and rate_distortion.png (the curves), and a
comparison PNG per photo for the first run. One run of this script is one measurement: compare its rows with each
other, not with another day's.
"""
from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path

import torch

from unified_latents.run_folder import load_run
from unified_latents.data import PHOTOS, load_photo, to_unit_range
from unified_latents.sweep import load_sweep
from unified_latents.whole_photos import (CODECS, at_rate, codec_curve, comparison_figure, compare_with_codecs)

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="a stage-1 run folder, or LABEL=FOLDER (repeatable)")
    parser.add_argument("--sweep", action="store_true", help="also the shipped sweep's models (tile by tile)")
    parser.add_argument("--decodes", default="1,8", help="decode counts to report, comma separated")
    parser.add_argument("--temperatures", default="1", help="decode temperatures (one decode each below 1)")
    parser.add_argument("--steps", type=int, default=32, help="DDIM decode steps")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # --run LABEL=FOLDER names a model in the table; a bare folder is named by its last part.
    runs = [run.partition("=")[::2] if "=" in run else (Path(run).name, run) for run in args.run]
    models = {label: load_run(folder, "cpu") for label, folder in runs}
    if args.sweep:
        models.update({f"sweep/{name}": model for name, model in load_sweep()[1].items()})
    if not models:
        parser.error("give at least one --run or --sweep")
    decode_counts = [int(k) for k in args.decodes.split(",")]
    # (decodes, temperature): every count of samples at temperature 1, and one decode at each lower temperature
    choices = [(k, 1.0) for k in decode_counts] + [(1, float(t)) for t in args.temperatures.split(",") if float(t) < 1]
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    rows, curves = [], {}
    for photo in PHOTOS["heldout"]:
        image = load_photo(photo)
        curves[photo] = {codec: codec_curve(to_unit_range(image), codec) for codec in CODECS}
        for index, (name, model) in enumerate(models.items()):
            for decodes, temperature in choices:
                row, pictures = compare_with_codecs(model, image, args.steps, decodes=decodes, temperature=temperature)
                rows.append({"model": name, "photo": photo, **row, "machine": machine})
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
                if index == 0:
                    fig = comparison_figure(pictures, row, f"{photo}: {name}, {args.steps}-step DDIM")
                    suffix = f"k{decodes}" if temperature == 1 else f"t{temperature:g}"
                    fig.savefig(out / f"rate_distortion_{photo}_{suffix}.png", dpi=100)
    with open(out / "rate_distortion.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "rate_distortion_codecs.csv", "w", newline="") as handle:
        fields = ["photo", "codec", "quality", "bits", "bpp", "psnr_db", "coarse_psnr_db"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for photo, by_codec in curves.items():
            for curve in by_codec.values():
                writer.writerows({"photo": photo, **point} for point in curve)
    plot(rows, curves, out / "rate_distortion.png")


def plot(rows: list[dict], curves: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for axis, (photo, by_codec) in zip(axes, curves.items()):
        for (codec, curve), color in zip(by_codec.items(), ("0.55", "0.2")):  # greys: the models get the colours
            points = sorted((p["bpp"], p["psnr_db"]) for p in curve if p["bpp"] <= 1.2)
            axis.plot(*zip(*points), "--" if codec == "JPEG" else "-", color=color, label=f"{CODECS[codec]} (files)")
        for index, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
            mine = [r for r in rows if r["photo"] == photo and r["model"] == name]
            for r in mine:
                kind = ("one decode" if r["decodes"] == 1 else f"mean of {r['decodes']}") if r["temperature"] == 1 \
                    else f"temperature {r['temperature']:g}"
                marker = "o" if kind == "one decode" else ("*" if r["temperature"] == 1 else "D")
                axis.scatter([r["bpp_bound"]], [r["psnr_db"]], color=f"C{index % 10}", marker=marker,
                             s=30 if marker == "o" else 60, label=f"UL {name}, {kind}")
        axis.set(xlabel="bits per pixel (UL: the prior's bound; codecs: real files)", ylabel="PSNR, dB on [0, 1]",
                 title=f"{photo}, whole photo, 256-pixel scale")
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        axis.legend(unique.values(), unique.keys(), fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
