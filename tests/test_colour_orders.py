"""The trainer's colour orders (`permute_colours`): what stage 1 trains on, and what it refuses."""
import pytest
import torch

from unified_latents.data import colour_orders, load_images, permute_colours
from unified_latents.train import _stage_one_job
from unified_latents.distributed import init_distributed
from unified_latents.config import make_config


def _batches(tmp_path, **overrides):
    config = make_config("smoke", out_dir=str(tmp_path / "run"), **overrides)
    job = _stage_one_job(config, init_distributed("cpu"))
    indices = torch.arange(job.train_size)
    return config, job.get_batch(indices)


def test_trainer_shows_each_patch_in_its_colour_order(tmp_path):
    config, plain = _batches(tmp_path)
    _, shown = _batches(tmp_path, permute_colours=True)
    raw = torch.stack([image for image in load_images("photos", "train", config.image_size, count=config.train_count,
                                                        seed=config.seed)])
    torch.testing.assert_close(plain, raw, rtol=0, atol=0)  # off: the patches as they are
    expected = permute_colours(raw, colour_orders(config.train_count, config.seed))
    torch.testing.assert_close(shown, expected, rtol=0, atol=0)  # on: each patch in its own fixed order
    changed = (shown != raw).flatten(1).any(1)
    assert 0.6 < changed.float().mean() < 0.95  # five of the six orders move something (identity: 1 in 6)


def test_grey_images_are_refused_with_the_fix_named(tmp_path):
    with pytest.raises(ValueError, match="permute_colours must be false for images that are not RGB"):
        make_config("smoke", permute_colours=True, image_channels=1)
    with pytest.raises(ValueError, match="images must be RGB"):
        permute_colours(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
