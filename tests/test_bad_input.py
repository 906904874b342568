"""Bad input gets a ValueError that names the argument and says what is accepted."""
import math

import pytest
import torch

from unified_latents.decoder import break_even_logsnr, decoder_elbo, decoder_loss_weight, decoder_weight, pixel_schedule
from unified_latents.encoding import FixedNoiseEncoder, add_fixed_noise, image_pixels, nats_to_bits_per_pixel
from unified_latents.loss import noise_weighted_loss
from unified_latents.noise import (CosineSchedule, LinearLogSNR, check_finite, diffuse, sample_time, shifted_cosine,
                                   to_eps)
from unified_latents.prior import check_prior_aligned, latent_schedule, prior_elbo, terminal_kl
from unified_latents.config import make_config
from unified_latents.distributed import resolve_device

B = 4
x = torch.randn(B, 3, 8, 8)
eps = torch.randn(B, 3, 8, 8)
logsnr = torch.linspace(-5, 5, B)
identity_denoiser = lambda z, lam: z  # noqa: E731


@pytest.mark.parametrize("call, message", [
    (lambda: noise_weighted_loss(x, x[:, :2], eps, logsnr, 1.0), "prediction, x and eps must have the same shape"),
    (lambda: noise_weighted_loss(x, x, eps[:2], logsnr, 1.0), "prediction, x and eps must have the same shape"),
    (lambda: noise_weighted_loss(x, x, eps, logsnr[:3], 1.0), f"logsnr must have shape ({B},)"),
    (lambda: noise_weighted_loss(x, x, eps, logsnr, torch.ones(B + 1)), f"weight must be a scalar or have shape ({B},)"),
    (lambda: noise_weighted_loss(x[:, 0, 0, 0], x[:, 0, 0, 0], eps[:, 0, 0, 0], logsnr, 1.0), "prediction must have shape (B, ...)"),
    (lambda: noise_weighted_loss(x.numpy(), x, eps, logsnr, 1.0), "prediction must be a torch.Tensor"),
    (lambda: diffuse(x, eps[:, :1], logsnr), "x and eps must have the same shape"),
    (lambda: diffuse(x, eps, logsnr[:2]), f"per-sample values must have shape ({B},)"),
])
def test_mismatched_shapes(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()


@pytest.mark.parametrize("make, message", [
    (lambda: LinearLogSNR(5.0, 5.0), "an empty range"),
    (lambda: LinearLogSNR(5.0, -15.0), "a reversed range"),
    (lambda: CosineSchedule(15.0, -15.0), "a reversed range"),
    (lambda: shifted_cosine(3.0, 3.0, 32, 64), "an empty range"),
    (lambda: latent_schedule(5.0, 5.0), "an empty range"),
    (lambda: latent_schedule(5.0, 9.0), "a reversed range"),
    (lambda: CosineSchedule(-15.0, math.inf), "logsnr_max must be a finite number"),
    (lambda: LinearLogSNR(math.nan, 5.0), "logsnr_min must be a finite number"),
    (lambda: CosineSchedule(-15, 15, shift=math.nan), "shift must be a finite number"),
    (lambda: shifted_cosine(-15, 15, 32, -64), "resolution must be a positive number of pixels"),
    (lambda: latent_schedule(kind="quadratic"), "kind must be 'linear' or 'cosine'"),
])
def test_bad_schedules(make, message):
    with pytest.raises(ValueError, match=message):
        make()
    # and the message says what is accepted
    if "range" in message:
        with pytest.raises(ValueError, match="needs logsnr_min < logsnr_max"):
            make()


def test_times_outside_unit_interval():
    for t in (torch.tensor([-0.1, 0.5]), torch.tensor([1.01])):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            LinearLogSNR(-15, 5)(t)
    with pytest.raises(ValueError, match="t must be a floating-point tensor"):
        LinearLogSNR(-15, 5)(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sample_time(0)


@pytest.mark.parametrize("logsnr_0", [-1.0, 20.5, 100.0, math.nan, math.inf])
def test_logsnr_0_out_of_range(logsnr_0):
    with pytest.raises(ValueError, match="logsnr_0"):
        add_fixed_noise(x, logsnr_0)
    with pytest.raises(ValueError, match="logsnr_0"):
        FixedNoiseEncoder(torch.nn.Identity(), logsnr_0)
    with pytest.raises(ValueError, match="logsnr_0"):
        latent_schedule(logsnr_0)
    if math.isfinite(logsnr_0):
        with pytest.raises(ValueError, match=r"must lie in \[0, 20\]"):
            add_fixed_noise(x, logsnr_0)


def test_logsnr_0_accepted_range():
    for logsnr_0 in (0.0, 3.0, 5.0, 10.0, 20.0):
        z_0, _ = add_fixed_noise(x, logsnr_0)
        assert torch.isfinite(z_0).all()


@pytest.mark.parametrize("loss_factor", [0.0, -1.5, math.nan, math.inf])
def test_loss_factor_must_be_positive(loss_factor):
    with pytest.raises(ValueError, match="loss_factor"):
        decoder_weight(logsnr, loss_factor, 0.0)
    with pytest.raises(ValueError, match="loss_factor"):
        break_even_logsnr(loss_factor, 0.0)
    with pytest.raises(ValueError, match="loss_factor"):
        decoder_elbo(identity_denoiser, x, pixel_schedule(8), loss_factor=loss_factor)
    if math.isfinite(loss_factor):
        with pytest.raises(ValueError, match="must be > 0"):
            decoder_weight(logsnr, loss_factor, 0.0)


def test_bias_must_be_a_number_or_plus_infinity():
    for bias in (math.nan, -math.inf):
        with pytest.raises(ValueError, match="bias"):
            decoder_weight(logsnr, 1.5, bias)
    assert torch.equal(decoder_weight(logsnr, 1.5, math.inf), torch.full_like(logsnr, 1.5))
    with pytest.raises(ValueError, match="space must be 'eps', 'x' or 'v'"):
        decoder_loss_weight(logsnr, -torch.ones(B), 1.5, 0.0, "score")


def test_non_finite_logsnr():
    for bad in (math.nan, math.inf, -math.inf):
        lam = logsnr.clone()
        lam[1] = bad
        with pytest.raises(ValueError, match="logsnr must be finite"):
            noise_weighted_loss(x, x, eps, lam, 1.0)
    with pytest.raises(ValueError, match="logsnr_min must be a finite number"):
        terminal_kl(x, math.nan)


def test_unknown_parameterization():
    with pytest.raises(ValueError, match=r"parameterization must be one of \('eps', 'x', 'v'\)"):
        to_eps(x, x, logsnr, "score")
    with pytest.raises(ValueError, match="parameterization must be one of"):
        prior_elbo(identity_denoiser, x, latent_schedule(), parameterization="epsilon")
    with pytest.raises(ValueError, match="parameterization must be one of"):
        decoder_elbo(identity_denoiser, x, pixel_schedule(8), parameterization="x0")


def test_misaligned_prior_and_bad_image_size():
    with pytest.raises(ValueError, match="must start at the encoder's noise level"):
        check_prior_aligned(LinearLogSNR(-15, 6), 5.0)
    for size in (0, (32, -1)):
        with pytest.raises(ValueError, match="image_size must be a positive"):
            nats_to_bits_per_pixel(1.0, size)


def test_low_precision_inputs_keep_float32_noise_levels():
    xb = x.bfloat16()
    bound = prior_elbo(lambda z, lam: z, xb, latent_schedule(), parameterization="v")
    assert bound.logsnr.dtype == torch.float32 and bound.total.dtype == torch.float32
    loss = decoder_elbo(lambda z, lam: z, xb, pixel_schedule(8), parameterization="v")
    assert loss.logsnr.dtype == torch.float32 and loss.loss.dtype == torch.float32


@pytest.mark.parametrize("call, message", [
    (lambda: make_config("smoke", seed=10**14), "seed must be an integer in [0, 2³¹)"),
    (lambda: make_config("smoke", device="cudax"), "device must be auto, cpu, cuda or cuda:N"),
    (lambda: resolve_device("foo"), "device must be auto, cpu, cuda or cuda:N; got 'foo'"),
    (lambda: image_pixels(32.0), "image_size must be a positive int side length"),
    (lambda: image_pixels((3, 32, 32)), "image_size must be a positive int side length"),
    (lambda: image_pixels(True), "image_size must be a positive int side length"),
    (lambda: decoder_weight(logsnr, 1.5, None), "bias (b) must be a finite number or math.inf"),
    (lambda: check_finite(None, "logsnr_min"), "logsnr_min must be a number; got None"),
])
def test_non_numbers_and_names_are_named(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value), str(error.value)


def test_x_space_weight_has_no_overflow_for_a_large_bias():
    weight = decoder_loss_weight(logsnr, torch.full_like(logsnr, -1.0), 1.5, 800.0, space="x")
    assert torch.isfinite(weight).all()
    expected = 0.5 * 1.5 * logsnr.exp()  # b → ∞: sigmoid(b − λ) = 1, the x-space ELBO weight e^λ
    torch.testing.assert_close(weight, expected)
