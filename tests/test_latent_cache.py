"""The latent cache refuses what it must not read: altered shard bytes, another encoder, a manifest cut short or of
another format (moved here from the latent-cache notebook, which keeps the checks of what it teaches)."""
import json
import warnings

import pytest

from unified_latents.config import make_config
from unified_latents.latent_cache import (
    CACHE_VERSION, CacheMismatchError, build_latent_cache, load_latent_cache, read_manifest,
)
from unified_latents.train import train


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    stage1 = root / "stage1"
    train(make_config("smoke", out_dir=str(stage1), train_count=40), progress=False)
    cache = build_latent_cache(stage1, shard_size=16, progress=False)
    return root, stage1, cache


def test_altered_shard_bytes_are_refused_and_a_rebuild_repairs_them(cached):
    _, stage1, cache = cached
    shard = cache / "heldout_00000.pt"
    original = shard.read_bytes()
    shard.write_bytes(original[:-8] + b"\0" * 8)
    with pytest.raises(CacheMismatchError, match="bytes differ from the manifest"):
        load_latent_cache(cache, "heldout")
    build_latent_cache(stage1, shard_size=16, progress=False)  # a complete cache with a bad shard is repaired
    assert shard.read_bytes() == original


def test_another_encoder_is_refused(cached):
    root, _, cache = cached
    with pytest.raises(CacheMismatchError, match="not by the expected"):
        load_latent_cache(cache, "train", expected_sha256="0" * 64)
    other = root / "other"
    train(make_config("smoke", out_dir=str(other), train_count=40, seed=1), progress=False)
    with pytest.raises(CacheMismatchError, match="was made by another encoder"):
        build_latent_cache(other, cache_dir=cache, progress=False)


def test_a_manifest_cut_short_or_of_another_format_is_refused_and_rebuilt(cached):
    _, stage1, cache = cached
    z_train = load_latent_cache(cache, "train")
    manifest_text = (cache / "manifest.json").read_text()
    (cache / "manifest.json").write_text(manifest_text[:50])
    with pytest.raises(CacheMismatchError, match="is not valid JSON"):
        load_latent_cache(cache, "train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_latent_cache(stage1, shard_size=16, progress=False)
    assert any("is unusable" in str(w.message) for w in caught)
    assert (load_latent_cache(cache, "train") == z_train).all()
    (cache / "manifest.json").write_text(json.dumps({**read_manifest(cache), "version": CACHE_VERSION + 1}))
    with pytest.raises(CacheMismatchError, match=f"this version of unified_latents reads version {CACHE_VERSION}"):
        load_latent_cache(cache, "train")
    build_latent_cache(stage1, shard_size=16, progress=False)  # leave the cache usable for the other tests
