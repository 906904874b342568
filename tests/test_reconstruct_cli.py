"""`ul_reconstruct` never overwrites what it reads, and refuses folders it cannot use, in one line each."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ENV_CODE = "import sys; from unified_latents.{1} import {0}; sys.exit({0}())"
SMOKE = ["--preset", "smoke", "--steps", "2", "--checkpoint_every", "2", "--no-progress", "--device", "cpu"]


def run_cli(entry, *args):
    module = "cli"  # every command lives there
    return subprocess.run([sys.executable, "-c", ENV_CODE.format(entry, module), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "smoke"
    result = run_cli("train_main", *SMOKE, "--out_dir", run)
    assert result.returncode == 0, result.stderr
    return run


def photos(folder, names):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    return {name: (folder / name).read_bytes() for name in names}


def test_inputs_sharing_a_stem_get_their_own_reconstructions(stage_one, tmp_path):
    originals = photos(tmp_path / "in", ["a.png", "a.jpg", "b.png"])
    result = run_cli("reconstruct_main", stage_one, tmp_path / "in", tmp_path / "out", "--steps", 1)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png") if "_compare" not in p.name) == \
        ["a.jpg.png", "a.png.png", "b.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_compare.png")) == \
        ["a.jpg_compare.png", "a.png_compare.png", "b_compare.png"]
    assert {name: (tmp_path / "in" / name).read_bytes() for name in originals} == originals


def test_the_output_folder_may_not_be_the_input_folder(stage_one, tmp_path):
    originals = photos(tmp_path / "in", ["a.png"])
    result = run_cli("reconstruct_main", stage_one, tmp_path / "in", tmp_path / "in" / ".." / "in", "--steps", 1)
    assert result.returncode == 2 and "must not be the input folder" in result.stderr
    assert (tmp_path / "in" / "a.png").read_bytes() == originals["a.png"]
    (tmp_path / "file.txt").write_text("x")
    result = run_cli("reconstruct_main", stage_one, tmp_path / "in", tmp_path / "file.txt", "--steps", 1)
    assert result.returncode == 2 and "is a file" in result.stderr


def test_a_stage_two_or_foreign_run_folder_is_named_as_such(stage_one, tmp_path):
    photos(tmp_path / "in", ["a.png"])
    for fields, message in (({"stage1_run": str(stage_one)}, "is a stage-2 run"),
                            ({"image_size": 32, "colour": "blue"}, "fields this version does not know (colour)")):
        folder = tmp_path / f"run{len(message)}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(fields))
        result = run_cli("reconstruct_main", folder, tmp_path / "in", tmp_path / "out", "--steps", 1)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_help_says_where_config_defaults_come_from():
    result = run_cli("train_main", "--help")
    assert result.returncode == 0 and "default: None" not in result.stdout
    assert "(default: the preset's value)" in " ".join(result.stdout.split())


def test_temperature_is_recorded_and_checked(stage_one, tmp_path):
    photos(tmp_path / "in", ["a.png"])
    result = run_cli("reconstruct_main", stage_one, tmp_path / "in", tmp_path / "out", "--steps", 2,
                     "--temperature", 0)
    assert result.returncode == 0, result.stderr
    header, row = (tmp_path / "out" / "reconstructions.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["temperature"] == "0.0"
    result = run_cli("reconstruct_main", stage_one, tmp_path / "in", tmp_path / "out2", "--temperature", 1.5)
    assert result.returncode == 2 and "--temperature must be in [0, 1]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
