"""The notebooks' proofs-by-test, re-run with deliberate mistakes: each mistake must make them fail.

The Monte Carlo checks draw their times i.i.d. (not the training default, low-discrepancy times): only then is
std/√N the standard error of the mean. With stratified times the mean is about twice as precise as std/√N says,
and "within 4 standard errors" would accept errors of 8 true σ.

A test that cannot fail proves nothing. Here the Gaussian mutual-information test (pillar 2), the
decoder-weighting test (pillar 3), the ε/x/v agreement test and the dλ/dt test are run once as
written (they must pass) and once with a sign or a factor of ½ wrong (they must fail).
"""
import math

import pytest
import torch

import unified_latents.decoder as decoder_module
import unified_latents.prior as prior_module
from unified_latents.decoder import decoder_elbo, decoder_loss_weight, decoder_weight, pixel_schedule
from unified_latents.noise import CosineSchedule, LinearLogSNR, diffuse, to_x
from unified_latents.prior import gaussian_optimal_eps, gaussian_prior_elbo_expected, latent_schedule, prior_elbo

D, S2, N = 16, 1.0, 2**16


def gaussian_prior_check(schedule, seed=0):
    """Monte Carlo L_z with the exact optimal denoiser vs the closed form: (passes, mean, exact, stderr)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, D, generator=g, dtype=torch.float64) * math.sqrt(S2)
    t = torch.rand(N, generator=g, dtype=torch.float64)  # i.i.d.: std/√N is then the standard error
    bound = prior_elbo(lambda z_t, lam: gaussian_optimal_eps(z_t, lam, S2), z, schedule, parameterization="eps",
                       t=t, generator=g).total
    mean, stderr = bound.mean().item(), (bound.std() / math.sqrt(N)).item()
    exact = gaussian_prior_elbo_expected(D, S2, schedule.logsnr_max, schedule.logsnr_min)
    return abs(mean - exact) < 4 * stderr, mean, exact, stderr


class DoubledJacobian(LinearLogSNR):
    """The weight without its ½: −dλ/dt instead of ½(−dλ/dt)."""
    def dlogsnr_dt(self, t):
        return 2 * super().dlogsnr_dt(t)


class PlusJacobian(LinearLogSNR):
    """Eq. 4 / Alg. 1 as printed: +dλ/dt."""
    def dlogsnr_dt(self, t):
        return -super().dlogsnr_dt(t)


def test_gaussian_mutual_information_check_passes():
    for kind in ("linear", "cosine"):
        passes, mean, exact, stderr = gaussian_prior_check(latent_schedule(5.0, -15.0, kind))
        assert passes, (kind, mean, exact, stderr)
        mutual_information = 0.5 * D * math.log1p(S2 * math.exp(5.0))
        assert abs(exact - mutual_information) < 1e-4


@pytest.mark.parametrize("schedule", [DoubledJacobian(-15.0, 5.0), PlusJacobian(-15.0, 5.0)],
                         ids=["missing-half", "plus-dlambda-dt"])
def test_gaussian_check_catches_wrong_jacobian(schedule):
    passes, mean, exact, stderr = gaussian_prior_check(schedule)
    assert not passes
    assert abs(mean - exact) > 20 * stderr  # not a near miss


def test_gaussian_check_catches_wrong_terminal_sign(monkeypatch):
    schedule = latent_schedule(5.0, -3.0)  # a high λ_min so the terminal KL is large enough to matter
    assert gaussian_prior_check(schedule)[0]
    original = prior_module.terminal_kl
    monkeypatch.setattr(prior_module, "terminal_kl", lambda z, lam: -original(z, lam))
    assert not gaussian_prior_check(schedule)[0]


def test_gaussian_check_catches_a_weighted_prior(monkeypatch):
    """A prior loss with a sigmoid weight (like the decoder's) no longer bounds the rate."""
    original = prior_module.noise_weighted_loss
    def weighted(prediction, x, eps, logsnr, weight, parameterization):
        return original(prediction, x, eps, logsnr, weight * torch.sigmoid(2.0 - logsnr), parameterization)
    monkeypatch.setattr(prior_module, "noise_weighted_loss", weighted)
    assert not gaussian_prior_check(latent_schedule(5.0, -15.0))[0]


def decoder_gaussian_check(loss_factor, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    schedule = pixel_schedule(64, base_resolution=32)
    x = torch.randn(N, D, generator=g, dtype=torch.float64) * math.sqrt(S2)
    t = torch.rand(N, generator=g, dtype=torch.float64)  # i.i.d.: std/√N is then the standard error
    loss = decoder_elbo(lambda x_t, lam: gaussian_optimal_eps(x_t, lam, S2), x, schedule, loss_factor=loss_factor,
                        bias=bias, parameterization="eps", t=t, generator=g).loss
    grid = torch.linspace(schedule.logsnr_min, schedule.logsnr_max, 20_001, dtype=torch.float64)
    per_lambda = 0.5 * D * S2 * grid.exp() / (1 + S2 * grid.exp())
    # the weight written out (not decoder_weight, which a mistake below may replace)
    weight = loss_factor * torch.sigmoid(bias - grid) if bias < math.inf else torch.full_like(grid, loss_factor)
    expected = torch.trapezoid(weight * per_lambda, grid).item()
    mean, stderr = loss.mean().item(), (loss.std() / math.sqrt(N)).item()
    return abs(mean - expected) < 4 * stderr


def test_decoder_check_passes_and_catches_flipped_sigmoid(monkeypatch):
    assert decoder_gaussian_check(1.5, 0.0)
    assert decoder_gaussian_check(1.0, math.inf)
    correct = decoder_module.decoder_weight
    flipped = lambda logsnr, c=1.5, b=0.0: c * torch.sigmoid(logsnr - b)  # noqa: E731 the paper's text
    # the loss uses the flipped weight, the expectation keeps the correct one
    monkeypatch.setattr(decoder_module, "decoder_weight", flipped)
    g = torch.Generator().manual_seed(0)
    schedule = pixel_schedule(64, base_resolution=32)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    loss = decoder_elbo(lambda x_t, lam: gaussian_optimal_eps(x_t, lam, 1.0), x, schedule, loss_factor=1.5,
                        bias=0.0, parameterization="eps", generator=g).loss
    grid = torch.linspace(-15, 15, 20_001, dtype=torch.float64)
    expected = torch.trapezoid(correct(grid, 1.5, 0.0) * 0.5 * D * grid.exp() / (1 + grid.exp()), grid).item()
    assert abs(loss.mean().item() - expected) > 4 * (loss.std() / math.sqrt(N)).item()


def test_decoder_check_sees_the_bias(monkeypatch):
    """b = 0 and b = ∞ alone cannot see the bias: a loss that used −b or b/2 passed them. At b = 3 (and on the
    linear schedule for b = ∞, where the weight integrates in closed form) the check must tell."""
    assert decoder_gaussian_check(1.7, 3.0)
    assert decoder_gaussian_check(30.0, -2.0)
    linear = LinearLogSNR(-15.0, 15.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    loss = decoder_elbo(lambda x_t, lam: gaussian_optimal_eps(x_t, lam, 1.0), x, linear, loss_factor=1.0,
                        bias=math.inf, parameterization="eps", t=torch.rand(N, generator=g, dtype=torch.float64)).loss
    closed_form = 0.5 * D * (math.log1p(math.exp(15.0)) - math.log1p(math.exp(-15.0)))  # −log p(x|z) bound: D/2·Δlog(1+SNR)
    assert abs(loss.mean().item() - closed_form) < 4 * (loss.std() / math.sqrt(N)).item()
    original = decoder_module.decoder_weight
    for wrong in (lambda lam, c, b: original(lam, c, -b), lambda lam, c, b: original(lam, c, b / 2)):
        monkeypatch.setattr(decoder_module, "decoder_weight", wrong)
        assert not decoder_gaussian_check(1.7, 3.0)
        assert not decoder_gaussian_check(30.0, -2.0)


def test_eps_x_v_agreement_catches_the_papers_text_weight():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    schedule = pixel_schedule(64)
    lam, dlam = schedule(t), schedule.dlogsnr_dt(t)
    output = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    eps_form = decoder_elbo(lambda *_: output, x, schedule, loss_factor=1.5, bias=1.0, parameterization="v",
                            t=t, eps=eps).loss
    x_hat = to_x(output, diffuse(x, eps, lam), lam, "v")
    x_error = (x - x_hat).square().flatten(1).sum(1)
    assert torch.allclose(decoder_loss_weight(lam, dlam, 1.5, 1.0, "x") * x_error, eps_form, rtol=1e-9)
    # the paper's text: sigmoid(λ − b) beside e^λ, on the x-error
    text_form = 0.5 * -dlam * 1.5 * torch.sigmoid(lam - 1.0) * lam.exp() * x_error
    assert not torch.allclose(text_form, eps_form, rtol=1e-3)
    # and a missing ½ in the x-space weight
    assert not torch.allclose(2 * decoder_loss_weight(lam, dlam, 1.5, 1.0, "x") * x_error, eps_form, rtol=1e-3)


class CosineMissingTwo(CosineSchedule):
    def dlogsnr_dt(self, t):
        return super().dlogsnr_dt(t) / 2


def test_dlambda_dt_check_catches_a_wrong_factor():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for schedule, should_match in ((CosineSchedule(-15, 15), True), (CosineMissingTwo(-15, 15), False),
                                   (PlusJacobian(-15, 5), False), (LinearLogSNR(-15, 5), True)):
        tg = t.clone().requires_grad_(True)
        (autograd,) = torch.autograd.grad(schedule(tg).sum(), tg)
        assert torch.allclose(schedule.dlogsnr_dt(t), autograd, rtol=1e-8, atol=1e-8) == should_match
