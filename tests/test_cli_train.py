"""Stage 1 through its real command-line programs: a run folder, kill-and-resume, and one-line errors."""
import csv
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
from unified_latents.run_folder import load_checkpoint
from unified_latents.config import make_config
from unified_latents.train import train

SMOKE = ["--preset", "smoke", "--no-progress"]


def cli_command(program, *args):
    """The command line of an installed console script (a `python -c` entry when it is not on PATH)."""
    command = [program] if shutil_which(program) else [sys.executable, "-c",
               f"import sys; from unified_latents.{ENTRY[program]} as main; sys.exit(main())"]
    return command + [str(a) for a in args]


def run_cli(program, *args, timeout=300):
    return subprocess.run(cli_command(program, *args), capture_output=True, text=True, timeout=timeout)


def wait_for_metrics(process, run_dir, timeout=120):
    "Until the run in `run_dir` has logged its first line of metrics (the process must still be running)."
    metrics, deadline = Path(run_dir) / "metrics.jsonl", time.time() + timeout
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.02)


ENTRY = {"ul_train": "cli import train_main", "ul_reconstruct": "cli import reconstruct_main"}


def kill_after_first_checkpoint(args, run_dir, timeout=120):
    "Start `ul_train *args` into run_dir, SIGKILL it once its first checkpoint is on disk; the checkpoint's step."
    process = subprocess.Popen(cli_command("ul_train", *args, "--out_dir", run_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (Path(run_dir) / "checkpoints" / "latest").exists():
        assert process.poll() is None, "the run finished before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return load_checkpoint(run_dir)["step"]


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
    first = kill_after_first_checkpoint(args, killed_dir)
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


def test_sigterm_checkpoints_the_step_it_finishes_and_the_run_resumes_exactly(tmp_path):
    # checkpoint_every beyond the run: the only checkpoint before the end is the one the signal asks for
    args = [*SMOKE, "--steps", 120, "--checkpoint_every", 1000, "--log_every", 10]
    reference = run_cli("ul_train", *args, "--out_dir", tmp_path / "whole")
    assert reference.returncode == 0, reference.stderr

    stopped_dir = tmp_path / "stopped"
    process = subprocess.Popen(cli_command("ul_train", *args, "--out_dir", stopped_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_metrics(process, stopped_dir)  # step 10 is logged
    metrics = stopped_dir / "metrics.jsonl"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # a scheduler and torchrun may both pass it on: the repeat changes nothing
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, (out, err)  # ended by the signal, after its checkpoint
    step = load_checkpoint(stopped_dir)["step"]
    assert 10 <= step < 120, step
    assert f"stopped by SIGTERM after step {step}" in err and "rerun the same command to resume" in err
    assert not (stopped_dir / "summary.json").exists()
    assert [r["step"] for r in train_module.read_metrics(metrics)][-1] == step  # the steps since step 10 are logged

    resumed = run_cli("ul_train", *args, "--out_dir", stopped_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {stopped_dir} from step {step}" in resumed.stdout
    whole, again = load_checkpoint(tmp_path / "whole"), load_checkpoint(stopped_dir)
    assert again["step"] == whole["step"] == 120
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], again["model"][key]), key
        assert torch.equal(whole["ema"][key], again["ema"][key]), key


def test_ctrl_c_still_stops_a_shell_script_that_runs_training(tmp_path):
    # bash goes on with a script after Ctrl-C unless the program died of SIGINT: ul_train must, after its checkpoint
    command = " ".join(["ul_train"] if shutil_which("ul_train") else [sys.executable, "-m", "unified_latents"])
    run_dir = tmp_path / "run"
    script = f"{command} {' '.join(map(str, SMOKE))} --steps 400 --checkpoint_every 1000 --out_dir {run_dir}; echo AFTER"
    # Its own process group, as a terminal's Ctrl-C reaches, with SIGINT at its default as in a terminal: a test run
    # started in the background of a non-interactive shell (`nohup bash .ci/run &`) inherits SIGINT ignored, and
    # ul_train rightly keeps an ignored signal ignored.
    shell = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_metrics(shell, run_dir)
    os.killpg(shell.pid, signal.SIGINT)
    out, err = shell.communicate(timeout=120)
    assert "AFTER" not in out, (out, err)
    assert "stopped by SIGINT after step" in err
    assert 2 <= load_checkpoint(run_dir)["step"] < 400


def test_a_signal_during_the_last_checkpoint_is_not_lost(tmp_path, monkeypatch):
    saved = train_module.save_checkpoint

    def signal_while_saving(run_dir, state, step, keep):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes, while the checkpoint is written
        return saved(run_dir, state, step, keep)

    monkeypatch.setattr(train_module, "save_checkpoint", signal_while_saving)
    config = make_config("smoke", out_dir=str(tmp_path / "run"), checkpoint_every=1000)
    with pytest.raises(train_module.TrainingStopped, match="stopped by SIGTERM after step 6"):
        train(config, progress=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 6
    assert not (tmp_path / "run" / "summary.json").exists()  # stopped before the final evaluation
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # and the handlers are back


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
    with open(tmp_path / "out" / "reconstructions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["img0.png", "img1.png"]
    for row in rows:  # the photo's own size (40×50 is no multiple of the downsampling: padded, then cropped)
        assert (row["width"], row["height"], row["one_pass"]) == ("50", "40", "True")
        assert float(row["bpp_bound"]) > 0 and float(row["bits_bound"]) > 0
        assert float(row["psnr_db"]) > 0 and row["jpeg_psnr_db"] and row["webp_shown_quality"]
    with Image.open(tmp_path / "out" / "img0.png") as reconstruction:
        assert reconstruction.size == (50, 40)
    with Image.open(tmp_path / "out" / "img0_compare.png") as comparison:
        assert comparison.size[0] >= 4 * 50  # original | UL | JPEG | WebP
    downscaled = run_cli("ul_reconstruct", run, photos / "img0.png", tmp_path / "small", "--steps", 1,
                         "--max-side", 20)
    assert downscaled.returncode == 0, downscaled.stderr
    with Image.open(tmp_path / "small" / "img0.png") as reconstruction:
        assert reconstruction.size == (25, 20)
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


# Run-folder safety: unreadable checkpoints, pruning, the run lock, metrics on resume, config on a fresh start,
# the checkpoint before the evaluation. In-process smoke runs (about a second each).

def smoke(run, **overrides):
    return make_config("smoke", out_dir=str(run), **overrides)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_all_checkpoints_unreadable_is_an_error_not_a_silent_restart(tmp_path):
    run = tmp_path / "run"
    train(smoke(run, steps=12, keep_checkpoints=2), progress=False)
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_0000009.pt", "step_0000012.pt"]
    for path in folder.glob("step_*.pt"):
        truncate(path)
    with pytest.raises(ValueError, match="no checkpoint .* can be read") as error:
        train(smoke(run, keep_checkpoints=2), progress=False)
    message = str(error.value)
    assert "step_0000009.pt" in message and "step_0000012.pt" in message and "move them" in message
    # nothing was touched: the files are still there for the user to inspect or move
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_0000009.pt", "step_0000012.pt"]
    # moved aside as the message says, the run starts over and keeps its new checkpoints
    (run / "corrupt").mkdir()
    for path in folder.glob("step_*.pt"):
        path.rename(run / "corrupt" / path.name)
    summary = train(smoke(run, keep_checkpoints=2), progress=False)
    assert summary["train_steps"] == 6
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_0000003.pt", "step_0000006.pt"]
    assert (folder / "latest").read_text() == "step_0000006.pt"


def test_checkpoints_beyond_the_resume_step_are_set_aside_not_counted_as_newest(tmp_path):
    run = tmp_path / "run"
    train(smoke(run, steps=12, keep_checkpoints=2), progress=False)
    folder = run / "checkpoints"
    truncate(folder / "step_0000012.pt")  # resumes from step 9; step 12 is newer by name and by number
    with pytest.warns(UserWarning, match="cannot be read"):
        summary = train(smoke(run, steps=11, checkpoint_every=1, keep_checkpoints=1), progress=False)
    assert summary["train_steps"] == 11
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_0000011.pt"]
    assert (folder / "latest").read_text() == "step_0000011.pt"
    assert load_checkpoint(run)["step"] == 11
    assert (folder / "unused" / "step_0000012.pt").exists()  # set aside, not deleted


def test_pruning_is_by_step_number_and_never_removes_the_new_checkpoint(tmp_path):
    for step in (9_999_999, 10_000_000):  # 8 digits sort before 7 by name
        train_module.save_checkpoint(tmp_path, {"step": step}, step, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")] == ["step_10000000.pt"]
    assert load_checkpoint(tmp_path)["step"] == 10_000_000


def test_atomic_writes_of_one_file_from_two_writers_do_not_collide(tmp_path):
    import threading
    target, errors = tmp_path / "file.txt", []

    def write(tmp, text):
        tmp.write_text(text)
        time.sleep(0.005)  # both writers hold a temporary file at once

    def writer(text):
        try:
            for _ in range(20):
                train_module.atomic_write(target, lambda tmp: write(tmp, text))
        except Exception as error:
            errors.append(error)
    threads = [threading.Thread(target=writer, args=(text,)) for text in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert target.read_text() in ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no temporary file left behind


def test_a_run_folder_in_use_is_refused_and_a_dead_holder_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("ul_train", *SMOKE, "--out_dir", run)
        assert result.returncode == 2, result.stderr
        error_lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(error_lines) == 1, result.stderr
        assert str(run) in error_lines[0] and f"PID {holder.pid}" in error_lines[0], error_lines[0]
        assert not (run / "config.json").exists() and not (run / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".lock").exists()  # left behind by the dead holder: the OS released its lock
    assert train(smoke(run), progress=False)["train_steps"] == 6


def metric_records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_cuts_metrics_back_to_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(smoke(run, steps=14, checkpoint_every=10, keep_checkpoints=3), progress=False)
    complete = metric_records(run)
    # as if killed after logging step 14, before its checkpoint, in the middle of writing a line
    (run / "checkpoints" / "step_0000014.pt").unlink()
    (run / "checkpoints" / "latest").write_text("step_0000010.pt")
    with open(run / "metrics.jsonl", "w") as file:
        file.write("".join(json.dumps(r) + "\n" for r in complete if "loss" in r) + '{"step": 16, "lo')
    stale = run / "checkpoints" / ".step_0000014.pt.x1y2z3.tmp"  # the interrupted write of checkpoint 14
    stale.write_bytes(b"half a checkpoint")
    train(smoke(run, steps=14, checkpoint_every=10, keep_checkpoints=3), progress=False)
    assert not stale.exists()
    records = metric_records(run)  # every line parses
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8, 10, 12, 14]
    assert [r["step"] for r in records if "eval_psnr_db" in r] == [14]

    def numbers(record):  # all but the timings
        return {key: value for key, value in record.items() if key not in ("steps_per_s", "wall_s")}
    assert [numbers(r) for r in records] == [numbers(r) for r in complete]  # retrained steps: the same numbers


def test_figures_skip_an_unreadable_metrics_line_with_a_warning(tmp_path):
    lines = [json.dumps({"step": 2, "loss": 1.0, "bpp": 0.5}), "{not json", json.dumps({"step": 4, "loss": 0.5,
             "bpp": 0.4}), json.dumps({"step": 4, "eval_psnr_db": 20.0, "eval_bpp": 0.3})]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    images = torch.zeros(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="metrics.jsonl"):
        train_module.save_figures(tmp_path, images, images)
    assert (tmp_path / "curves.png").exists()


def test_a_run_that_crashed_before_its_first_checkpoint_can_change_its_settings(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "update_ema", out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            train(smoke(run, batch_size=8), progress=False)
    assert json.loads((run / "config.json").read_text())["batch_size"] == 8
    with pytest.warns(UserWarning, match="batch_size"):  # replaced, with a word about what changed
        assert train(smoke(run, batch_size=2), progress=False)["train_steps"] == 6
    assert json.loads((run / "config.json").read_text())["batch_size"] == 2
    with pytest.raises(ValueError, match="holds a run with a different configuration"):  # now there is a checkpoint
        train(smoke(run, batch_size=4), progress=False)


def test_the_checkpoint_is_written_before_the_evaluation(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def crash(*args, **kwargs):
        raise RuntimeError("evaluation crashed (simulated)")
    monkeypatch.setattr(train_module, "evaluate", crash)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train(smoke(run, eval_every=3), progress=False)
    assert load_checkpoint(run)["step"] == 3


def test_logged_metrics_cover_every_micro_batch_of_the_step(tmp_path):
    """The same global batch in 1, 2 or 4 micro-batches logs the same numbers (the old log held only the last one)."""
    logs = []
    for accumulation in (1, 2, 4):
        run = tmp_path / str(accumulation)
        train(smoke(run, steps=4, grad_accumulation=accumulation), progress=False)
        logs.append([r for r in metric_records(run) if "loss" in r])
    for log in logs[1:]:
        assert [r["step"] for r in log] == [r["step"] for r in logs[0]] == [2, 4]
        for record, reference in zip(log, logs[0]):
            for key in ("loss", "bpp", "prior_nats", "decoder_loss"):
                assert record[key] == pytest.approx(reference[key], rel=1e-5), (key, record[key], reference[key])
            assert record["loss_by_logsnr"].keys() == reference["loss_by_logsnr"].keys()
            for key, value in reference["loss_by_logsnr"].items():
                assert record["loss_by_logsnr"][key] == pytest.approx(value, rel=1e-5), key
