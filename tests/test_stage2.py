"""Stage 2 through the real commands, in real processes: the smoke pipeline (`ul_demo --smoke`), seeded `ul_sample`,
stage 2 under torchrun (2 gloo processes) against one process, a SIGTERM that stops stage 2 with a checkpoint, and the
errors a user meets first."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unified_latents.run_folder import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args, timeout=600):
    return subprocess.run([str(a) for a in args], env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    result = run(sys.executable, "-c", "import sys; from unified_latents.cli import demo_main; "
                 "sys.exit(demo_main())", "--smoke", "--out_dir", root, "--no-progress", "--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result.stdout


def test_smoke_pipeline_writes_samples_and_both_rates(pipeline):
    root, printed = pipeline
    summary = json.loads((root / "smoke-stage2" / "summary.json").read_text())
    for key in ("bpp_prior", "bpp_base", "fd_patchnet_base", "fd_patchnet_prior", "fd_patchnet_real_floor"):
        assert isinstance(summary[key], float) and summary[key] == summary[key], key
    assert "NOT comparable to published FID" in summary["units"]["fd_patchnet"]
    assert len(list((root / "smoke-stage2" / "samples").glob("sample_*.png"))) == 64
    assert (root / "smoke" / "latents" / "manifest.json").exists()
    assert "bits per pixel with the stage-1 prior" in printed
    stage1 = json.loads((root / "smoke" / "summary.json").read_text())  # the whole held-out photos, one pass
    assert [row["photo"] for row in stage1["whole_photos"]] == ["coffee", "chelsea"]
    for row in stage1["whole_photos"]:
        assert row["one_pass"] and row["height"] == 256 and row["width"] in (384, 385) and row["bpp_bound"] > 0
        assert row["psnr_db"] > 0 and "jpeg_psnr_db" in row and "webp_psnr_db" in row
        assert row["temperature"] == 1.0 and row["temperature_0_psnr_db"] > 0 and row["temperature_0_coarse_psnr_db"] > 0
    assert "stage 1, whole coffee (384×256, one pass)" in printed


def test_ul_sample_is_reproducible(pipeline, tmp_path):
    root, _ = pipeline
    code = "import sys; from unified_latents.cli import sample_main; sys.exit(sample_main())"
    outputs = []
    for seed, name in ((5, "a"), (5, "b"), (6, "c")):
        result = run(sys.executable, "-c", code, root / "smoke-stage2", tmp_path / name, "--count", 3, "--seed", seed,
                     "--device", "cpu")
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name / "grid.png").read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


def test_stage_two_under_torchrun_matches_one_process(pipeline, tmp_path):
    root, _ = pipeline
    common = ["--preset", "smoke", "--stage1_run", root / "smoke", "--steps", 5, "--batch_size", 4, "--no-progress",
              "--sample_count", 4, "--device", "cpu"]
    code = "import sys; from unified_latents.cli import base_main; sys.exit(base_main())"
    one = run(sys.executable, "-c", code, *common, "--out_dir", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    script = tmp_path / "ul_base.py"
    script.write_text("import sys\nfrom unified_latents.cli import base_main\nsys.exit(base_main())\n")
    two = run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, *common,
              "--out_dir", tmp_path / "two")
    assert two.returncode == 0, two.stdout + two.stderr
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert b["world_size"] == 2 and a["step"] == b["step"] == 5
    diff = torch.cat([(a["model"][k] - b["model"][k]).abs().flatten() for k in a["model"]])
    # the same tolerance as stage 1's DDP test (tests/test_distributed.py): float32 reduction order, through Adam
    assert diff.median() < 1e-6 and diff.quantile(0.99) < 1e-5 and diff.max() <= 5e-3, diff.max()


def test_sigterm_stops_ul_base_with_a_checkpoint_that_resumes(pipeline, tmp_path):
    root, _ = pipeline
    common = ["--preset", "smoke", "--stage1_run", root / "smoke", "--steps", 400, "--checkpoint_every", 1000,
              "--log_every", 5, "--no-progress", "--sample_count", 4, "--device", "cpu"]
    code = "import sys; from unified_latents.cli import base_main; sys.exit(base_main())"
    out_dir = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-c", code, *[str(a) for a in common], "--out_dir", str(out_dir)],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = out_dir / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGTERM, (out, err)  # ended by the signal, after its checkpoint
    step = load_checkpoint(out_dir)["step"]
    assert 5 <= step < 400 and f"ul_base: stopped by SIGTERM after step {step}" in err, (step, err)
    assert not (out_dir / "summary.json").exists()
    # resumed with fewer steps to keep the test short: the run folder allows a changed step count
    resumed = run(sys.executable, "-c", code, *common[:5], step + 2, *common[6:], "--out_dir", out_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {step}" in resumed.stdout and load_checkpoint(out_dir)["step"] == step + 2


def test_ul_base_refuses_an_unfinished_stage_one_run(tmp_path):
    (tmp_path / "half").mkdir()
    code = "import sys; from unified_latents.cli import base_main; sys.exit(base_main())"
    result = run(sys.executable, "-c", code, "--preset", "smoke", "--stage1_run", tmp_path / "half", "--out_dir",
                 tmp_path / "out")
    assert result.returncode == 2
    assert "is not a finished stage-1 run" in result.stderr and "ul_train --preset demo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stage_two_refuses_a_stage_one_encoder_that_changed(pipeline, tmp_path):
    "Stage 1 trained further after stage 2: resuming or loading the base model must stop, even without the cache."
    import shutil
    from unified_latents.latent_cache import CacheMismatchError
    from unified_latents.base import load_base_run
    root, _ = pipeline
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    shutil.copytree(root / "smoke", stage1, ignore=shutil.ignore_patterns("latents"))  # as if the cache was deleted
    shutil.copytree(root / "smoke-stage2", stage2)
    assert (stage2 / "stage1_encoder.json").exists()
    fields = json.loads((stage2 / "config.json").read_text())
    (stage2 / "config.json").write_text(json.dumps({**fields, "stage1_run": str(stage1), "cache_dir": ""}))
    load_base_run(stage2, "cpu")  # the same encoder: accepted
    checkpoint_path = sorted((stage1 / "checkpoints").glob("step_*.pt"))[-1]
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    name = next(k for k in checkpoint["ema"] if k.startswith("encoder.") and checkpoint["ema"][k].is_floating_point())
    checkpoint["ema"][name] += 1e-3  # stage 1 moved on
    torch.save(checkpoint, checkpoint_path)
    with pytest.raises(CacheMismatchError, match="was trained on the latents of encoder"):
        load_base_run(stage2, "cpu")
    code = "import sys; from unified_latents.cli import base_main; sys.exit(base_main())"
    result = run(sys.executable, "-c", code, "--preset", "smoke", "--stage1_run", stage1, "--out_dir", stage2,
                 "--steps", 12, "--sample_count", 4, "--device", "cpu", "--no-progress")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "was trained on the latents of encoder" in result.stderr and not (stage1 / "latents").exists()
