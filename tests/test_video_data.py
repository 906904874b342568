"""The embedded video generator (notebook 23): deterministic from a seed, splits that share nothing, positions known."""
import pytest
import torch

from unified_latents.video_data import VIDEO_TEXTURES, digit_images, moving_digits


def test_a_clip_depends_on_its_split_seed_and_index_only():
    first = moving_digits("train", 2, frames=8, seed=11)
    more = moving_digits("train", 5, frames=8, seed=11)
    assert torch.equal(first.clips, more.clips[:2]) and torch.equal(first.centres, more.centres[:2])
    assert not torch.equal(first.clips, moving_digits("heldout", 2, frames=8, seed=11).clips)


def test_the_splits_share_no_digit_image_and_no_texture():
    train, _ = digit_images("train")
    held, _ = digit_images("heldout")
    assert not (train.flatten(1)[:, None] == held.flatten(1)[None]).all(-1).any()
    clips = moving_digits("heldout", 12, frames=2)
    assert set(clips.texture) <= set(VIDEO_TEXTURES["heldout"])
    assert set(moving_digits("train", 12, frames=2).texture) <= set(VIDEO_TEXTURES["train"])


def test_positions_are_known_and_move_as_said():
    clips = moving_digits("train", 6, frames=16)
    steps = (clips.centres[:, 1:] - clips.centres[:, :-1]).norm(dim=-1)
    assert (steps <= 3.0 + 1.5).all()  # at most 3 px a frame, plus the rounding of two positions
    assert (clips.centres >= 11.5).all() and (clips.centres <= 64 - 12.5).all()  # the digit stays on the canvas
    assert clips.labels.min() >= 0 and clips.labels.max() <= 9


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test"), "split must be one of"),
    (dict(count=0), "count must be a positive integer"),
    (dict(size=20), "size must exceed digit_size"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        moving_digits(**kwargs)
