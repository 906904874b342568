"""The video path from outside the notebooks: shapes through every network, a causal encoder, frame conditioning on
trained smoke models, a real `ul_train` video run killed and resumed bit-identically, a run on a folder of real video
files, and run folders of the other kind refused by name."""
import json

import av
import numpy as np
import pytest
import torch

from test_cli_train import kill_after_first_checkpoint, run_cli
from unified_latents.base import load_base_run
from unified_latents.run_folder import load_checkpoint, load_run
from unified_latents.video_base import (
    VideoLatentDiffusion, continue_clips, load_video_base_run, make_video_base_config, train_video_base,
)
from unified_latents.video_model import VideoUnifiedLatents, load_video_run, make_video_config, train_video
from unified_latents.video_nets import SpaceTimeTransformer, VideoDecoder, VideoEncoder

SMOKE = ["--preset", "video-smoke", "--no-progress"]


def randomise(module):
    "Random weights: new networks start with zero last layers, which would hide what a check looks for."
    generator = torch.Generator().manual_seed(0)
    for p in module.parameters():
        p.data.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return module.eval()


@pytest.mark.parametrize("frames, side, f_t, channels, patch, middle", [
    (16, 32, 4, (8, 16, 32), 1, 0),  # the demo's shape, smaller widths
    (8, 24, 2, (8, 16), 1, 1),       # odd side, a transformer at the lowest level
    (4, 16, 1, (8, 16), 2, 0),       # no temporal downsampling, 2×2 patching
])
def test_shapes_through_every_network(frames, side, f_t, channels, patch, middle):
    x = torch.rand(2, 3, frames, side, side) * 2 - 1
    f = patch * 2 ** (len(channels) - 1)
    encoder = VideoEncoder(3, channels, latent_channels=5, patch_size=patch, temporal_downsampling=f_t)
    z = encoder(x)
    assert z.shape == (2, 5, frames // f_t, side // f, side // f)
    decoder = VideoDecoder(3, 5, channels, patch_size=patch, temporal_downsampling=f_t, transformer_depth=middle,
                           transformer_width=16)
    lam = torch.tensor([-3.0, 4.0])
    assert decoder(x, lam, z).shape == x.shape
    assert SpaceTimeTransformer(5, 16, 1, 2)(z, lam).shape == z.shape
    if z.shape[2] > 1:
        base = SpaceTimeTransformer(5, 16, 1, 2, conditional=True)
        assert base(z[:, :, 1:], lam, given=z[:, :, :1]).shape == z[:, :, 1:].shape
    config = make_video_config("video-smoke", frames=frames, image_size=side, temporal_downsampling=f_t,
                               encoder_channels=channels, decoder_channels=channels, patch_size=patch,
                               decoder_transformer_depth=middle, decoder_transformer_width=16, digit_size=side // 2)
    model = VideoUnifiedLatents(config)
    out = model.loss(x)
    assert out.total.ndim == 0 and torch.isfinite(out.total) and out.bits_per_pixel.shape == (2,)
    with torch.no_grad():
        assert model.reconstruct(x, steps=2).shape == x.shape
        assert model.sample_latents(3, steps=2).shape == (3, config.latent_channels, *config.latent_grid)


def test_every_latent_frame_depends_on_its_own_and_earlier_frames_only():
    torch.manual_seed(0)
    encoder = randomise(VideoEncoder(3, (8, 16, 32), latent_channels=4, temporal_downsampling=4))
    x = torch.rand(2, 3, 16, 16, 16) * 2 - 1
    with torch.no_grad():
        z = encoder(x)
        for j in range(4):
            end = 4 * (j + 1)
            later = x.clone()
            later[:, :, end:] = torch.rand_like(later[:, :, end:])
            assert torch.allclose(encoder(later)[:, :, :j + 1], z[:, :, :j + 1], atol=1e-6), j
            assert torch.allclose(encoder(x[:, :, :end]), z[:, :, :j + 1], atol=1e-6), j
            if j < 3:  # and a latent frame does see its own group
                own = x.clone()
                own[:, :, end - 1] += 0.5
                assert not torch.allclose(encoder(own)[:, :, j], z[:, :, j], atol=1e-4), j


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    "A finished video-smoke stage 1 and a stage 2 on it (trained once for the tests of this module)."
    root = tmp_path_factory.mktemp("video")
    train_video(make_video_config("video-smoke", out_dir=str(root / "s1"), steps=20), progress=False)
    train_video_base(make_video_base_config("video-smoke", stage1_run=str(root / "s1"), out_dir=str(root / "s2"),
                                            steps=20), progress=False)
    return root


def test_continuations_keep_the_given_frames_and_follow_them(smoke_runs):
    base, stage1 = load_video_base_run(smoke_runs / "s2", "cpu")
    given = base.config.given_frames
    clips = torch.rand(4, 3, 4, 16, 16) * 2 - 1
    draws = lambda: torch.Generator().manual_seed(3)
    continued = continue_clips(base, stage1, clips, 4, 4, generator=draws())
    assert torch.equal(continued[:, :, :given], clips[:, :, :given])  # never regenerated
    assert torch.equal(continue_clips(base, stage1, clips, 4, 4, generator=draws()), continued)  # seeded
    other = clips.clone()
    other[:, :, :given] = -other[:, :, :given]
    moved = (continue_clips(base, stage1, other, 4, 4, generator=draws())[:, :, given:] - continued[:, :, given:])
    assert moved.abs().mean() > 1e-4, moved.abs().mean()

    # The check has teeth: a continuation that never looked at its given frames would not move at all.
    blind = lambda x, generator=None, eps=None: (torch.zeros_like(stage1.encode(x)), torch.zeros(len(x)))
    stage1.prior_latent = blind
    a = continue_clips(base, stage1, clips, 4, 4, generator=draws())[:, :, given:]
    b = continue_clips(base, stage1, other, 4, 4, generator=draws())[:, :, given:]
    assert torch.equal(a, b)


def test_the_stage_two_summary_measures_continuations_beside_the_baseline(smoke_runs):
    summary = json.loads((smoke_runs / "s2" / "summary.json").read_text())
    assert set(summary["scores"]) == {"base", "copy_last_frame", "real", "base_minus_copy_last_frame"}
    paired = summary["scores"]["base_minus_copy_last_frame"]
    assert paired["clips"] == summary["continued_clips"] and 0 <= paired["fraction_closer"] <= 1
    # the paired mean is the difference of the two means (the same clips, the same frames)
    means = {name: summary["scores"][name]["centroid_error_px"] for name in ("base", "copy_last_frame")}
    assert abs(paired["mean_px"] - (means["base"] - means["copy_last_frame"])) < 1e-4
    for name in ("base", "copy_last_frame", "real"):
        scores = summary["scores"][name]
        assert len(scores["centroid_error_px_per_frame"]) == summary["generated_frames"] == 2
        assert 0 <= scores["identity"] <= 1 and scores["fd_clip_features"] >= 0
    for figure in ("continuations.png", "continuation.gif", "motion.png"):
        assert (smoke_runs / "s2" / figure).stat().st_size > 0


def test_run_folders_of_the_other_kind_are_refused_by_name(smoke_runs, tmp_path):
    with pytest.raises(ValueError, match="is a video run: load it with unified_latents.video_model.load_video_run"):
        load_run(smoke_runs / "s1", "cpu")
    with pytest.raises(ValueError, match="it is a video run, load it with"):
        load_base_run(smoke_runs / "s2", "cpu")
    image_run = tmp_path / "image"
    result = run_cli("ul_train", "--preset", "smoke", "--steps", "2", "--no-progress", "--out_dir", image_run)
    assert result.returncode == 0, result.stderr
    with pytest.raises(ValueError, match="is an image run: load it with load_run"):
        load_video_run(image_run, "cpu")


def test_a_killed_video_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    args = [*SMOKE, "--steps", 60, "--checkpoint_every", 5, "--log_every", 5]
    reference = run_cli("ul_train", *args, "--out_dir", tmp_path / "whole")
    assert reference.returncode == 0, reference.stderr
    assert "bits per pixel per frame" in reference.stdout

    killed_dir = tmp_path / "killed"
    assert kill_after_first_checkpoint(args, killed_dir) < 60

    resumed = run_cli("ul_train", *args, "--out_dir", killed_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed_dir} from step" in resumed.stdout
    whole, again = load_checkpoint(tmp_path / "whole"), load_checkpoint(killed_dir)
    assert again["step"] == whole["step"] == 60
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], again["model"][key]), key
        assert torch.equal(whole["ema"][key], again["ema"][key]), key


def write_video(path, frames=12, size=40, seed=0):
    "A real MPEG-4 file of a bright square drifting over noise."
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = background.copy()
            image[10:20, 5 + t:15 + t] = 240
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_ul_train_on_a_folder_of_real_video_files(tmp_path):
    videos = tmp_path / "videos"
    for split, count in (("train", 3), ("val", 1)):
        (videos / split).mkdir(parents=True)
        for i in range(count):
            write_video(videos / split / f"clip{i}.mp4", seed=i)
    result = run_cli("ul_train", *SMOKE, "--dataset", "videofolder", "--data_root", videos, "--steps", 2,
                     "--eval_count", 2, "--out_dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_clips"] == 2 and len(summary["psnr_db_per_frame"]) == 4  # 12 frames → 3 clips of 4


@pytest.mark.parametrize("args, message", [
    (["--preset", "video-demo", "--temporal_downsampling", "3"], "temporal_downsampling"),
    (["--preset", "video-demo", "--frames", "9"], "frames must be a multiple of temporal_downsampling"),
    (["--preset", "demo", "--digit_size", "8"], "--digit_size belong(s) to video runs"),
    (["--preset", "video-smoke", "--dataset", "videofolder", "--data_root", "/nonexistent"], "video folder not found"),
])
def test_bad_video_input_is_one_clear_line(tmp_path, args, message):
    result = run_cli("ul_train", *args, "--out_dir", tmp_path / "run", "--no-progress")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
