"""Real multi-process training on this CPU: torchrun with the gloo backend, no mocks.

- 2 processes vs 1 process (and vs 1 process with 2 accumulation steps), same global batch;
- FSDP2 (fully_shard per block) on 2 processes with accumulation vs 1 process, and an FSDP checkpoint resumed by
  a single process;
- a worker killed under `torchrun --max-restarts=3`: the job restarts and resumes from the last checkpoint,
  ending bit-identical to an uninterrupted 2-process run (this used to hang or fail in about half the runs:
  the restarted workers read their dead predecessors' gloo addresses from torchrun's shared store; see
  `_attempt_store` in unified_latents/train.py);
- SIGTERM to torchrun: both workers stop at the same step with one checkpoint, and the job resumes from it,
  bit-identical to an uninterrupted run; SIGTERM to every process (as Slurm sends it) with a slow checkpoint: it is
  still written;
- a truncated newest checkpoint: the previous one is used, with a warning;
- the log of a 2-process run (and of 1 process with 2 accumulation steps) matches 1 process: it is all-reduced over
  every micro-batch of every rank, not rank 0's last one (only rank 0 holds the run folder's lock, or the 2-process
  runs here would fail).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from unified_latents.run_folder import load_checkpoint, read_metrics

SMOKE = ["--preset", "smoke", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun sets this for its workers; the single process matches


def ul_train(*args, processes=1, extra=(), timeout=300, background=False):
    args = [str(a) for a in args]
    if processes == 1:
        command = [sys.executable, "-m", "unified_latents", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   *extra, "-m", "unified_latents", *args]
    if background:
        return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


def parameter_differences(run_a, run_b, weights="model"):
    a, b = load_checkpoint(run_a), load_checkpoint(run_b)
    assert a["step"] == b["step"]
    return torch.cat([(a[weights][k].float() - b[weights][k].float()).abs().flatten() for k in a[weights]])


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    common = [*SMOKE, "--steps", 5, "--batch_size", 4]
    one = ul_train(*common, "--out_dir", tmp_path / "one")
    two = ul_train(*common, "--out_dir", tmp_path / "two", processes=2)
    accumulated = ul_train(*common, "--grad_accumulation", 2, "--out_dir", tmp_path / "accumulated")
    other_seed = ul_train(*common, "--seed", 1, "--out_dir", tmp_path / "other_seed")
    for result in (one, two, accumulated, other_seed):
        assert result.returncode == 0, result.stdout + result.stderr
    assert load_checkpoint(tmp_path / "two")["world_size"] == 2
    # Tolerance: the all-reduce sums gradients in another order than one process does (float32 rounding,
    # ~1e-7 relative). Adam divides by the gradient's own scale, so a parameter whose gradient is ~0 can move
    # by up to lr = 1e-3 a step either way: bound the maximum by 5 steps × lr, and the bulk much tighter.
    for run in ("two", "accumulated"):
        diff = parameter_differences(tmp_path / "one", tmp_path / run)
        assert diff.median() < 1e-6 and diff.quantile(0.99) < 1e-5 and diff.max() <= 5e-3, (run, diff.max())
    # and the comparison has teeth: another seed (other batches and noise) is far away
    assert parameter_differences(tmp_path / "one", tmp_path / "other_seed").quantile(0.99) > 1e-2
    # the log covers the whole global batch, all-reduced over the ranks: the same numbers as one process
    # (the weights differ by float rounding only, see above)
    logs = {run: [r for r in read_metrics(tmp_path / run / "metrics.jsonl") if "loss" in r]
            for run in ("one", "two", "accumulated")}
    for run in ("two", "accumulated"):
        assert [r["step"] for r in logs[run]] == [r["step"] for r in logs["one"]] == [2, 4, 5]
        for record, reference in zip(logs[run], logs["one"]):
            for key in ("loss", "bpp"):
                assert abs(record[key] - reference[key]) <= 1e-4 * abs(reference[key]), (run, key, record, reference)
            assert record["loss_by_logsnr"].keys() == reference["loss_by_logsnr"].keys(), run


def test_fsdp_matches_one_process_and_its_checkpoint_resumes_without_it(tmp_path):
    common = [*SMOKE, "--steps", 5, "--batch_size", 4]
    one = ul_train(*common, "--out_dir", tmp_path / "one")
    fsdp = ul_train(*common, "--parallel", "fsdp", "--grad_accumulation", 2, "--out_dir", tmp_path / "fsdp",
                    processes=2)
    # sharded for 3 steps on 2 processes, then finished by one process from the FSDP checkpoint
    part = ul_train(*SMOKE, "--steps", 3, "--batch_size", 4, "--parallel", "fsdp", "--out_dir", tmp_path / "moved",
                    processes=2)
    for result in (one, fsdp, part):
        assert result.returncode == 0, result.stdout + result.stderr
    assert load_checkpoint(tmp_path / "fsdp")["parallel"] == "fsdp"
    moved = ul_train(*common, "--parallel", "fsdp", "--out_dir", tmp_path / "moved")
    assert moved.returncode == 0 and f"resuming {tmp_path / 'moved'} from step 3" in moved.stdout, moved.stderr
    for run in ("fsdp", "moved"):  # the same tolerance as DDP (see above), for the weights and for the EMA
        diff = parameter_differences(tmp_path / "one", tmp_path / run)
        assert diff.median() < 1e-6 and diff.quantile(0.99) < 1e-5 and diff.max() <= 5e-3, (run, diff.max())
        ema = parameter_differences(tmp_path / "one", tmp_path / run, "ema")
        assert ema.quantile(0.99) < 1e-5 and ema.max() <= 5e-3, (run, ema.max())


def _children(pid):
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            children.append(int(status.parent.name))
    return children


def test_torchrun_restarts_a_dead_worker_and_resumes(tmp_path):
    common = [*SMOKE, "--steps", 60, "--batch_size", 4, "--checkpoint_every", 5]
    whole = ul_train(*common, "--out_dir", tmp_path / "whole", processes=2)
    assert whole.returncode == 0, whole.stdout

    run = tmp_path / "restarted"
    agent = ul_train(*common, "--out_dir", run, processes=2, extra=["--max-restarts=3"], background=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists():
        assert agent.poll() is None, agent.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    workers = _children(agent.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)  # one worker dies
    output, _ = agent.communicate(timeout=300)
    assert agent.returncode == 0, output
    assert "resuming" in output
    assert load_checkpoint(run)["step"] == 60
    assert parameter_differences(tmp_path / "whole", run).max() == 0  # exact: per-step seeding


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_the_job_resumes(tmp_path):
    common = [*SMOKE, "--steps", 60, "--batch_size", 4, "--checkpoint_every", 1000, "--log_every", 5]
    whole = ul_train(*common, "--out_dir", tmp_path / "whole", processes=2)
    assert whole.returncode == 0, whole.stdout

    run = tmp_path / "stopped"
    agent = ul_train(*common, "--out_dir", run, processes=2, background=True)
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
        assert agent.poll() is None, agent.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    agent.send_signal(signal.SIGTERM)  # torchrun passes it to both workers
    output, _ = agent.communicate(timeout=120)
    assert agent.returncode != 0, output
    step = load_checkpoint(run)["step"]  # the only checkpoint before the end: the one the signal asked for
    assert 5 <= step < 60, (step, output)
    assert f"stopped by SIGTERM after step {step}" in output

    resumed = ul_train(*common, "--out_dir", run, processes=2)
    assert resumed.returncode == 0, resumed.stdout
    assert f"resuming {run} from step {step}" in resumed.stdout
    assert parameter_differences(tmp_path / "whole", run).max() == 0
    assert parameter_differences(tmp_path / "whole", run, "ema").max() == 0


def test_a_scheduler_signalling_every_process_still_gets_the_checkpoint(tmp_path):
    # As Slurm does: SIGTERM to both workers and, a moment later, to torchrun, which passes it on again. Rank 0's
    # checkpoint is made slow (2 s, as a large one is): the other rank must wait for it, and the repeated SIGTERM must
    # not kill rank 0 in the middle of writing it.
    script = tmp_path / "slow_checkpoint_train.py"
    script.write_text("import sys, time\nimport unified_latents.train as train\nsave = train.save_checkpoint\n"
                      "def slow(*args):\n    time.sleep(2)\n    return save(*args)\n"
                      "train.save_checkpoint = slow\nfrom unified_latents.cli import train_main\n"
                      "sys.exit(train_main())\n")
    run = tmp_path / "run"
    args = [*SMOKE, "--steps", 400, "--batch_size", 4, "--checkpoint_every", 1000, "--log_every", 5,
            "--out_dir", run]
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(script), *[str(a) for a in args]], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
        assert agent.poll() is None, agent.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    workers = _children(agent.pid)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.01)
    agent.send_signal(signal.SIGTERM)
    output, _ = agent.communicate(timeout=120)
    step = load_checkpoint(run)["step"]
    assert 5 <= step < 400, output
    assert output.count(f"stopped by SIGTERM after step {step}") == 1, output  # rank 0 reports, once


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = tmp_path / "run"
    first = ul_train(*SMOKE, "--steps", 6, "--checkpoint_every", 3, "--out_dir", run)
    assert first.returncode == 0, first.stderr
    newest = run / "checkpoints" / "step_0000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a crash mid-copy, say
    again = ul_train(*SMOKE, "--steps", 9, "--checkpoint_every", 3, "--out_dir", run)
    assert again.returncode == 0, again.stderr
    assert "cannot be read" in again.stderr and "step_0000006.pt" in again.stderr
    assert f"resuming {run} from step 3" in again.stdout
    assert load_checkpoint(run)["step"] == 9
