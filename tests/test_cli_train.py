"""Stage 1 through its real command-line programs: a run folder, kill-and-resume, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unified_latents.train as train_module
from unified_latents.train import load_checkpoint, make_config, train

SMOKE = ["--preset", "smoke", "--no-progress"]


def run_cli(program, *args, timeout=300):
    """Run an installed console script (falls back to `python -m`-style entry when not on PATH)."""
    command = [program] if shutil_which(program) else [sys.executable, "-c",
               f"import sys; from unified_latents.cli import {ENTRY[program]} as main; sys.exit(main())"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


ENTRY = {"ul_train": "train_main", "ul_reconstruct": "reconstruct_main"}


def shutil_which(name):
    from shutil import which
    return which(name)


def test_smoke_run_writes_the_whole_run_folder(tmp_path):
    result = run_cli("ul_train", *SMOKE, "--out_dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "reconstructions.png", "curves.png",
                 "checkpoints/latest"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in ("psnr_db", "bpp_latent", "decode_steps", "train_steps", "wall_s"):
        assert key in summary
    assert summary["train_steps"] == 6 and summary["weights"] == "EMA"
    assert np.isfinite(summary["psnr_db"]) and summary["bpp_latent"] > 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6]
    assert len(list((run / "checkpoints").glob("step_*.pt"))) == 2  # steps 3 and 6


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    args = [*SMOKE, "--steps", 120, "--checkpoint_every", 10, "--log_every", 10]
    reference = run_cli("ul_train", *args, "--out_dir", tmp_path / "whole")
    assert reference.returncode == 0, reference.stderr

    killed_dir = tmp_path / "killed"
    command = ["ul_train"] if shutil_which("ul_train") else [sys.executable, "-c",
               "import sys; from unified_latents.cli import train_main; sys.exit(train_main())"]
    process = subprocess.Popen(command + [str(a) for a in args] + ["--out_dir", str(killed_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed_dir / "checkpoints" / "latest").exists():
        assert process.poll() is None, "the run finished before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = load_checkpoint(killed_dir)["step"]
    assert first < 120

    resumed = run_cli("ul_train", *args, "--out_dir", killed_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed_dir} from step" in resumed.stdout
    whole, again = load_checkpoint(tmp_path / "whole"), load_checkpoint(killed_dir)
    assert again["step"] == whole["step"] == 120
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], again["model"][key]), key
        assert torch.equal(whole["ema"][key], again["ema"][key]), key
    assert json.loads((killed_dir / "summary.json").read_text())["train_steps"] == 120


@pytest.mark.parametrize("args, message", [
    (["--step", "3"], "unrecognized arguments: --step 3"),
    (["--loss_factor", "-1"], "loss_factor must be a finite number > 0"),
    (["--image_size", "31"], "cannot be divided by the encoder's downsampling factor 2"),
    (["--lr", "abc"], "argument --lr: invalid float value"),
    (["--encoder_channels", "8,x"], "expected comma-separated integers"),
    (["--dataset", "cifar10", "--data_root", "/nonexistent/cifar", "--image_size", "32"],
     "CIFAR-10 not found at /nonexistent/cifar"),
    (["--dataset", "imagefolder", "--data_root", "/nonexistent/folder"], "image folder not found at /nonexistent/folder"),
    (["--logsnr_0", "25"], "logsnr_0 must be in [0, 20]"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    result = run_cli("ul_train", *SMOKE, "--out_dir", tmp_path / "run", *args)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr  # one line, no traceback
    assert message in error_lines[0], error_lines[0]


def test_help_explains_every_option():
    result = run_cli("ul_train", "--help")
    assert result.returncode == 0
    for option in ("--loss_factor", "--bias", "--logsnr_0", "--decode_steps", "--out_dir", "--dry-run"):
        assert option in result.stdout


def test_dry_run_of_the_paper_architecture():
    result = run_cli("ul_train", "--preset", "imagenet512", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "decoder" in result.stdout and "GFLOPs" in result.stdout and "GiB" in result.stdout


def test_reconstruct_a_folder_skipping_what_is_not_an_image(tmp_path):
    run = tmp_path / "run"
    assert run_cli("ul_train", *SMOKE, "--out_dir", run).returncode == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photos / f"img{i}.png")
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.png").write_bytes(b"\x89PNG garbage")
    result = run_cli("ul_reconstruct", run, photos, tmp_path / "out", "--steps", 2)
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stderr and "broken.png" in result.stderr
    rows = (tmp_path / "out" / "reconstructions.csv").read_text().splitlines()
    assert rows[0] == "file,psnr_db,bpp_latent" and len(rows) == 3
    assert (tmp_path / "out" / "img0.png").exists()
    missing = run_cli("ul_reconstruct", tmp_path / "no_run", photos, tmp_path / "out2")
    assert missing.returncode == 2 and "is not a run folder" in missing.stderr


def test_non_finite_batches_never_reach_the_weights(tmp_path, monkeypatch):
    """A data set of NaN images: every step is skipped and counted, weights and EMA stay finite."""
    class NanImages(torch.utils.data.Dataset):
        def __init__(self, image_size):
            self.images = torch.full((16, 3, image_size, image_size), float("nan"))

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return self.images[index]

    def nan_images(name, split, image_size, root=None, count=None, seed=0):
        return NanImages(image_size)
    monkeypatch.setattr(train_module, "load_images", nan_images)
    config = make_config("smoke", out_dir=str(tmp_path / "nan"), eval_count=4)
    torch.manual_seed(config.seed)
    initial = train_module.UnifiedLatents(config).state_dict()
    summary = train(config, progress=False)
    assert summary["skipped_steps"] == config.steps
    final = load_checkpoint(tmp_path / "nan")
    for key, value in final["model"].items():
        assert torch.isfinite(value).all() and torch.equal(value, initial[key]), key
        assert torch.isfinite(final["ema"][key]).all(), key
