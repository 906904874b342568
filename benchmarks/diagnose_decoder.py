"""Where a stage-1 model's error on a whole photo comes from: the latent, the decoder's sampling, or the weights.

    python benchmarks/diagnose_decoder.py --run before=runs/demo-no-colour-orders --run after=runs/demo

For each run (EMA weights unless said) and held-out photo (256-pixel scale, whole photo in one pass), from one z_0:
- the decoder's one-call estimate of x from the photo noised to λ, for λ from −15 to 10 (how much of the picture
  z_0 alone gives, and how it sharpens as the noise falls);
- DDIM with 8, 16 and 32 steps (drift and discretisation), the raw weights against the EMA;
- the mean of K decodes, K = 1, 2, 4, and one decode at temperature 0 (the sample's freedom against a bias);
- the mean colour error and the squared error in each octave of spatial frequency, beside JPEG and
  WebP at the run's own rate.
Writes benchmarks/results/decoder_diagnosis.json and decoder_diagnosis.png. One run of this script is one
measurement: compare its rows with each other.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from unified_latents.run_folder import load_run
from unified_latents.data import PHOTOS, load_photo, to_unit_range
from unified_latents.model import UnifiedLatents, psnr_db
from unified_latents.noise import diffuse, to_x
from unified_latents.run_folder import load_checkpoint
from unified_latents.whole_photos import codec_at_rate, coarse_psnr_db, frequency_band_errors, photo_rate_nats

RESULTS = Path(__file__).parent / "results"
LOGSNRS = (-15.0, -10.0, -5.0, 0.0, 5.0, 10.0)


def scores(image: torch.Tensor, reference: torch.Tensor) -> dict:
    return {"psnr_db": round(psnr_db(image, reference).item(), 3),
            "coarse_psnr_db": round(coarse_psnr_db(image, reference).item(), 3)}


def decode(model: UnifiedLatents, z_0: torch.Tensor, steps: int = 32, method: str = "ddim", seed: int = 3,
           temperature: float = 1.0) -> torch.Tensor:
    return model.decode(z_0, steps, method, torch.Generator().manual_seed(seed), temperature=temperature)


@torch.no_grad()
def diagnose(model: UnifiedLatents, raw: UnifiedLatents, x: torch.Tensor) -> dict:
    "All the measurements above for one photo x (1, 3, H, W) in [−1, 1], H and W multiples of the downsampling."
    z_0 = model.encode_noisy(x, torch.Generator().manual_seed(1))
    bpp = photo_rate_nats(model, x, generator=torch.Generator().manual_seed(0)).item() / 0.6931471805599453 / x[0, 0].numel()
    result = {"bpp_bound": round(bpp, 4), "one_call_by_logsnr": {}}
    for logsnr in LOGSNRS:  # the same noise at every λ: only the noise level changes
        lam = torch.full((1,), logsnr)
        x_t = diffuse(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(2)), lam)
        estimate = to_x(model.decoder(x_t, lam, z_0), x_t, lam, model.config.parameterization).clamp(-1, 1)
        result["one_call_by_logsnr"][str(logsnr)] = scores(estimate, x)
    result["ddim_by_steps"] = {str(s): scores(decode(model, z_0, s), x) for s in (8, 16, 32)}
    result["raw_weights_ddim_32"] = scores(decode(raw, raw.encode_noisy(x, torch.Generator().manual_seed(1))), x)
    samples = torch.cat([decode(model, z_0, seed=10 + k) for k in range(4)])
    result["mean_of_k"] = {str(k): scores(samples[:k].mean(0, keepdim=True), x) for k in (1, 2, 4)}
    zero = decode(model, z_0, temperature=0.0)
    result["temperature_0"] = scores(zero, x)
    result["spread_between_decodes_rms"] = round((samples - samples.mean(0, keepdim=True)).square().mean().sqrt().item(), 4)
    result["error_rms"] = round((samples - x).square().mean().sqrt().item(), 4)
    result["mean_colour_error_rgb"] = [round(v, 4) for v in (samples.mean((0, 2, 3)) - x.mean((0, 2, 3))).tolist()]
    images = {"UL one decode": samples[:1], "UL temperature 0": zero}
    for codec in ("JPEG", "WEBP"):
        images[codec] = codec_at_rate(x[0], codec, bpp)["image"][None]  # the largest file within UL's rate
        result[f"{codec.lower()}_file"] = scores(images[codec], x)
    # The squared error per octave on [0, 1] (share × mean squared error): comparable across the four images.
    result["mse_by_octave"] = {name: [round(v, 8) for v in (frequency_band_errors(image, x)[0]
                                                              * ((image - x) / 2).square().mean()).tolist()]
                               for name, image in images.items()}
    return result


def figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    photos = list(next(iter(results.values())))
    fig = Figure(figsize=(12, 3.6 * len(photos)))
    axes = fig.subplots(len(photos), 2, squeeze=False)
    for row, photo in zip(axes, photos):
        width = 0.8 / (len(results) + 2)
        for index, (label, by_photo) in enumerate(results.items()):
            errors = by_photo[photo]["mse_by_octave"]["UL one decode"]
            row[0].bar([o + index * width for o in range(len(errors))], errors, width, label=f"UL {label}, one decode")
        codecs = next(iter(results.values()))[photo]["mse_by_octave"]
        for index, codec in enumerate(("JPEG", "WEBP")):
            errors = codecs[codec]
            row[0].bar([o + (len(results) + index) * width for o in range(len(errors))], errors, width,
                       color=("0.55", "0.2")[index], label=f"{('JPEG', 'WebP')[index]} file at the first run's rate")
        row[0].set(xlabel="octave of spatial frequency (0: the coarsest)", ylabel="squared error in the octave, on [0, 1]",
                   title=f"{photo}: where the error lies", yscale="log")
        row[0].legend(fontsize=7)
        for index, (label, by_photo) in enumerate(results.items()):
            r = by_photo[photo]
            names = ["DDIM 8 steps", "DDIM 16", "DDIM 32", "mean of 2 (32)", "mean of 4 (32)", "temperature 0 (32)"]
            values = [r["ddim_by_steps"][s]["psnr_db"] for s in ("8", "16", "32")] + \
                [r["mean_of_k"][k]["psnr_db"] for k in ("2", "4")] + [r["temperature_0"]["psnr_db"]]
            row[1].plot(names, values, "o-", label=f"UL {label} ({r['bpp_bound']:.3f} bpp)")
            row[1].axhline(r["jpeg_file"]["psnr_db"], color=f"C{index}", ls="--", lw=0.8,
                           label=f"JPEG file at {label}'s rate")
            row[1].axhline(r["webp_file"]["psnr_db"], color=f"C{index}", ls=":", lw=0.8,
                           label=f"WebP file at {label}'s rate")
        row[1].set(ylabel="PSNR, dB on [0, 1]", title=f"{photo}: one decode (DDIM, steps), means, temperature")
        row[1].tick_params(axis="x", labelrotation=30, labelsize=7)
        row[1].legend(fontsize=6)
        row[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_FOLDER of a stage-1 run (repeatable)")
    parser.add_argument("--out", default=str(RESULTS), help="output folder")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for item in args.run:
        label, _, folder = item.partition("=")
        if not folder:
            parser.error(f"--run takes LABEL=RUN_FOLDER; got {item!r}")
        model = load_run(folder, "cpu")
        raw = UnifiedLatents(model.config)
        raw.load_state_dict(load_checkpoint(folder)["model"])
        raw.eval()
        results[label] = {}
        for photo in PHOTOS["heldout"]:
            x = to_unit_range(load_photo(photo))[None]
            f = model.config.downsampling
            x = x[..., : x.shape[-2] // f * f, : x.shape[-1] // f * f]
            results[label][photo] = diagnose(model, raw, x)
            print(label, photo, json.dumps(results[label][photo]), flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (out / "decoder_diagnosis.json").write_text(json.dumps({"machine": machine, "runs": dict(
        (item.partition("=")[0], item.partition("=")[2]) for item in args.run), "results": results}, indent=1))
    figure(results, out / "decoder_diagnosis.png")


if __name__ == "__main__":
    main()
