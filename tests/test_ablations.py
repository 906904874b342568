"""The ablation switches of `ModelConfig` (notebook "Why each pillar"): each trains from the command line, and each
does what it says — checked on the real networks, each check failing on the mistake named beside it."""
import json
import math
import subprocess
import sys

import pytest
import torch

from unified_latents.ablations import FIGURE_8_GRID, LOGSNR_0_PROBE, STAGE_TWO_VARIANTS, VARIANTS
from unified_latents.cli import ablations_main, train_main
from unified_latents.config import make_config
from unified_latents.latent_cache import build_latent_cache, load_latent_cache
from unified_latents.model import ModelConfig, UnifiedLatents
from unified_latents.encoding import nats_to_bits_per_pixel
from unified_latents.prior import normal_prior_kl, prior_elbo

TINY = dict(image_size=16, encoder_channels=(8, 16), decoder_channels=(8, 16), prior_width=16, prior_depth=1,
            loss_factor=30.0)


def tiny(seed: int = 0, **switches) -> UnifiedLatents:
    torch.manual_seed(seed)
    model = UnifiedLatents(ModelConfig(**TINY, **switches))
    for module in (model.decoder.out[-1], model.prior.out):  # zero at initialisation: that would hide gradients
        torch.nn.init.normal_(module.weight, std=0.05)
    return model


def batch(seed: int = 1) -> torch.Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def option(key, value) -> list[str]:
    return [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_from_the_command_line(tmp_path, variant):
    argv = ["--preset", "smoke", "--out_dir", str(tmp_path / variant), "--no_progress"]
    for key, value in VARIANTS[variant].items():
        argv += option(key, value)
    assert train_main(argv) == 0
    config = json.loads((tmp_path / variant / "config.json").read_text())
    assert all(config[key] == value for key, value in VARIANTS[variant].items()), config
    summary = json.loads((tmp_path / variant / "summary.json").read_text())
    assert math.isfinite(summary["bpp_latent"]) and math.isfinite(summary["bpp_prior_elbo"])


def test_ul_ablations_is_a_console_command_and_lists_the_grid():
    # the installed entry point, a real process: it lists every variant with both seeds and the Figure 8 grid
    out = subprocess.run([sys.executable, "-c", "import sys; from unified_latents.cli import ablations_main; "
                          "sys.exit(ablations_main(['--dry_run']))"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[-1] == f"{2 * len(VARIANTS) + len(FIGURE_8_GRID) + len(LOGSNR_0_PROBE)} stage-1 runs in runs/ablations"
    assert sum("+ stage 2" in line for line in lines) == 2 * len(STAGE_TWO_VARIANTS)


def test_stop_gradient_sends_the_encoder_only_the_discounted_kl():
    # mistake caught: the prior's term still differentiated through z_clean (no detach), or the KL weight ignored
    model = tiny(prior_kind="stop_gradient", normal_kl_weight=0.1)
    x = batch()
    noise = model.draw_noise(4, torch.Generator().manual_seed(2))
    z_clean = model.encode(x).detach().requires_grad_(True)
    rate, reported, _ = model._rate(z_clean, torch.zeros(4), noise)
    (grad,) = torch.autograd.grad(rate.sum(), z_clean)
    z_kl = z_clean.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(0.1 * normal_prior_kl(z_kl, 5.0).sum(), z_kl)
    torch.testing.assert_close(grad, expected)
    unweighted = prior_elbo(model.prior, z_clean.detach(), model.latent_schedule, t=noise.t_prior, eps=noise.eps_prior)
    torch.testing.assert_close(reported, unweighted.total)  # its reported rate is the prior's bound


def test_normal_prior_reports_its_kl_and_samples_n01():
    model = tiny(prior_kind="normal")
    x = batch()
    out = model.loss(x, noise=model.draw_noise(4, torch.Generator().manual_seed(2)))
    expected = nats_to_bits_per_pixel(normal_prior_kl(model.encode(x), 5.0), 16)
    torch.testing.assert_close(out.bits_per_pixel, expected.detach())
    assert (out.prior_bits_per_pixel != out.bits_per_pixel).all()  # the measuring prior's bound is another number
    z = model.sample_latents(4000, steps=2, generator=torch.Generator().manual_seed(0))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01


def test_learned_variance_pays_for_its_noise_with_the_entropy_bonus():
    # mistakes caught: the bonus added instead of subtracted; z̃'s extra noise left out of the prior's input
    model = tiny(learned_variance=True)
    with torch.no_grad():  # a visibly wider noise: r = raw − 5 with raw ≈ 5, so e^r ≈ 1
        model.encoder.out[-1].bias[4:].fill_(5.0)
    x = batch()
    noise = model.draw_noise(4, torch.Generator().manual_seed(2))
    assert noise.eps_variance is not None
    out = model.loss(x, noise=noise)
    z_tilde, bonus = model.prior_latent(x, eps=noise.eps_variance)
    assert (bonus > 0).all()
    assert not torch.allclose(z_tilde, model.encode(x))
    rate = prior_elbo(model.prior, z_tilde, model.latent_schedule, t=noise.t_prior, eps=noise.eps_prior)
    torch.testing.assert_close(out.prior_nats, (rate.total - bonus).detach())
    # a fixed-noise model draws no extra noise, so its other draws (and results) are those of before the switch
    assert tiny().draw_noise(4, torch.Generator().manual_seed(2)).eps_variance is None


def test_mse_decoder_is_deterministic_and_one_network_call():
    model = tiny(decoder_kind="mse")
    calls = []
    hook = model.decoder.register_forward_hook(lambda *_: calls.append(1))
    x = batch()
    first = model.reconstruct(x, steps=8, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1  # not a diffusion decode
    z_0 = model.encode_noisy(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.decode(z_0, steps=8, generator=torch.Generator().manual_seed(5)),
                               model.decode(z_0, steps=2, generator=torch.Generator().manual_seed(6)))
    hook.remove()
    assert first.abs().max() <= 1


def test_a_weighted_prior_reports_less_than_its_own_unweighted_bound():
    model = tiny(prior_weight_bias=0.0)
    out = model.loss(batch(), noise=model.draw_noise(4, torch.Generator().manual_seed(2)))
    assert (out.bits_per_pixel < out.prior_bits_per_pixel).all()
    unweighted = tiny().loss(batch(), noise=tiny().draw_noise(4, torch.Generator().manual_seed(2)))
    torch.testing.assert_close(out.prior_bits_per_pixel, unweighted.prior_bits_per_pixel)  # the same networks


def test_the_latent_cache_of_a_learned_variance_encoder_is_one_seeded_draw(tmp_path):
    config = make_config("smoke", learned_variance=True, out_dir=str(tmp_path / "run"))
    assert train_main(["--config", str(_write(tmp_path / "c.json", config)), "--no_progress"]) == 0
    first = load_latent_cache(build_latent_cache(tmp_path / "run", tmp_path / "a", progress=False), "train")[:]
    second = load_latent_cache(build_latent_cache(tmp_path / "run", tmp_path / "b", progress=False), "train")[:]
    torch.testing.assert_close(first, second)  # re-encoding gives the same bytes
    model = UnifiedLatents(config)
    assert first.shape[1] == model.config.latent_channels


def _write(path, config):
    import dataclasses
    path.write_text(json.dumps(dataclasses.asdict(config)))
    return path


@pytest.mark.parametrize("overrides, message", [
    (dict(decoder_kind="vq"), "decoder_kind must be diffusion or mse"),
    (dict(prior_kind="flow"), "prior_kind must be diffusion, normal or stop_gradient"),
    (dict(normal_kl_weight=-1.0), "normal_kl_weight must be a finite number ≥ 0"),
    (dict(prior_weight_bias=math.nan), "prior_weight_bias must be a finite number, or inf"),
    (dict(prior_kind="normal", learned_variance=True), "prior_kind='normal' takes neither learned_variance"),
])
def test_bad_switches_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config("smoke", **overrides)
