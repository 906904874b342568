"""The stage-1 objective's wiring, checked on the real networks: which tensor each network sees, at which noise
level, and where the encoder's gradient comes from.

`UnifiedLatents.loss` must (pillar 1) noise the encoder's latent to λ0 with the latent noise it is given and
condition the decoder on that z_0; (pillar 2) score the *clean* latent under the prior at the prior's own time;
(pillar 3) score the image under the decoder at an independent time; and let the encoder learn through both
terms. Each of the five mistakes below passed every check of the project before this file (a review tried them
on a copy of the library); each must fail here, so the checks keep their teeth.
"""
import dataclasses

import pytest
import torch

from unified_latents.encoding import add_fixed_noise
from unified_latents.model import ModelConfig, StageOneLoss, UnifiedLatents
from unified_latents.noise import diffuse
from unified_latents.decoder import decoder_elbo
from unified_latents.prior import prior_elbo

TINY = ModelConfig(image_size=16, encoder_channels=(8, 16), decoder_channels=(8, 16), prior_width=16, prior_depth=1,
                   loss_factor=30.0)


def tiny_model(seed: int = 0) -> UnifiedLatents:
    "A tiny model whose decoder output is not zero (at initialisation it is, which hides the decoder's gradient)."
    torch.manual_seed(seed)
    model = UnifiedLatents(TINY)
    for module in (model.decoder.out[-1], model.prior.out):
        torch.nn.init.normal_(module.weight, std=0.05)
    return model


def record_inputs(model: UnifiedLatents, loss_fn) -> dict:
    "Run `loss_fn(model, x, noise)` once and record what the prior and the decoder were called with."
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = model.draw_noise(4, torch.Generator().manual_seed(2))
    # different times for the two terms, so that reusing one for the other shows
    noise = dataclasses.replace(noise, t_prior=torch.tensor([0.1, 0.35, 0.6, 0.85]),
                                t_pixel=torch.tensor([0.7, 0.2, 0.9, 0.4]))
    seen = {}

    def recorder(name):
        def hook(module, args, output):  # returns None: the output is left as it is
            seen.setdefault(name, tuple(a.detach().clone() for a in args))
        return hook

    hooks = [model.prior.register_forward_hook(recorder("prior")),
             model.decoder.register_forward_hook(recorder("decoder"))]
    try:
        loss_fn(model, x, noise)
    finally:
        for hook in hooks:
            hook.remove()
    return dict(seen, x=x, noise=noise)


def wiring_holds(loss_fn) -> tuple[bool, str]:
    "Whether `loss_fn` wires the three networks as the method says; with the first rule it breaks."
    model = tiny_model()
    seen = record_inputs(model, loss_fn)
    x, noise = seen["x"], seen["noise"]
    with torch.no_grad():
        z_clean = model.encode(x)
        z_0 = diffuse(z_clean, noise.eps_latent, torch.full((4,), TINY.logsnr_0))
        prior_logsnr = model.latent_schedule(noise.t_prior)
        pixel_logsnr = model.pixel_schedule(noise.t_pixel)
    z_t, logsnr = seen["prior"][:2]
    if not torch.allclose(logsnr, prior_logsnr):
        return False, "the prior is not called at its own times"
    if not torch.allclose(z_t, diffuse(z_clean, noise.eps_prior, prior_logsnr), atol=1e-5):
        return False, "the prior does not score the clean latent"
    x_t, decoder_logsnr, decoder_z = seen["decoder"][:3]
    if not torch.allclose(decoder_logsnr, pixel_logsnr):
        return False, "the decoder is not called at its own times"
    if not torch.allclose(x_t, diffuse(x, noise.eps_pixel, pixel_logsnr), atol=1e-5):
        return False, "the decoder does not denoise the image"
    if torch.allclose(decoder_z, z_clean, atol=1e-3) or not torch.allclose(decoder_z, z_0, atol=1e-5):
        return False, "the decoder is not conditioned on z_0 = α0·z_clean + σ0·ε"
    # The encoder learns through both terms: its gradient changes with the decoder's loss factor.
    gradients = []
    for loss_factor in (30.0, 60.0):
        model = tiny_model()
        model.config = dataclasses.replace(model.config, loss_factor=loss_factor)
        loss_fn(model, x, noise).total.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    if torch.allclose(gradients[0], gradients[1]):
        return False, "no gradient reaches the encoder through the decoder"
    if gradients[0].abs().sum() == 0:
        return False, "no gradient reaches the encoder"
    return True, "ok"


def correct(model, x, noise):
    return model.loss(x, noise=noise)


def _assemble(model, x, rate, distortion) -> StageOneLoss:
    total = (rate.total + distortion.loss).mean() / x[0].numel()
    return StageOneLoss(total=total, prior_nats=rate.total.detach(),
                        bits_per_pixel=rate.bits_per_pixel(tuple(x.shape[-2:])).detach(),
                        decoder=distortion.loss.detach(), prior_logsnr=rate.logsnr.detach(),
                        decoder_logsnr=distortion.logsnr.detach())


def miswired(decoder_latent="z_0", prior_latent="z_clean", decoder_time="t_pixel", fixed_noise=True,
             detach_z_0=False):
    "`UnifiedLatents.loss` with one deliberate mistake (the defaults are the correct wiring)."
    def loss(model, x, noise):
        c = model.config
        z_clean = model.encode(x)
        z_0 = add_fixed_noise(z_clean, c.logsnr_0, eps=noise.eps_latent)[0] if fixed_noise else z_clean
        conditioning = {"z_0": z_0, "z_clean": z_clean}[decoder_latent]
        if detach_z_0:
            conditioning = conditioning.detach()
        rate = prior_elbo(model.prior, {"z_0": z_0, "z_clean": z_clean}[prior_latent], model.latent_schedule,
                          parameterization=c.parameterization, t=noise.t_prior, eps=noise.eps_prior)
        distortion = decoder_elbo(lambda x_t, logsnr: model.decoder(x_t, logsnr, conditioning), x,
                                  model.pixel_schedule, loss_factor=c.loss_factor, bias=c.bias,
                                  parameterization=c.parameterization, t=getattr(noise, decoder_time),
                                  eps=noise.eps_pixel)
        return _assemble(model, x, rate, distortion)
    return loss


def test_the_model_is_wired_as_the_method_says():
    holds, why = wiring_holds(correct)
    assert holds, why
    holds, why = wiring_holds(miswired())  # the copy used for the mistakes is itself right
    assert holds, why


@pytest.mark.parametrize("mistake, expected", [
    (dict(decoder_latent="z_clean"), "conditioned on z_0"),
    (dict(prior_latent="z_0"), "clean latent"),
    (dict(decoder_time="t_prior"), "decoder is not called at its own times"),
    (dict(fixed_noise=False), "conditioned on z_0"),
    (dict(detach_z_0=True), "through the decoder"),
], ids=["decoder-on-z_clean", "prior-on-z_0", "decoder-at-prior-time", "no-fixed-noise", "z_0-detached"])
def test_each_wiring_mistake_is_caught(mistake, expected):
    holds, why = wiring_holds(miswired(**mistake))
    assert not holds, f"{mistake} passed the wiring check"
    assert expected in why, why


def test_at_initialisation_the_decoder_share_is_zero_which_is_why_the_check_perturbs_it():
    """The decoder's output convolution starts at zero, so at initialisation no gradient reaches the encoder through
    the decoder: a check run on a fresh model could not see a detached z_0. This pins that fact down."""
    torch.manual_seed(0)
    fresh = UnifiedLatents(TINY)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    noise = fresh.draw_noise(2, torch.Generator().manual_seed(0))
    grads = []
    for loss_factor in (30.0, 60.0):
        fresh.zero_grad()
        fresh.config = dataclasses.replace(fresh.config, loss_factor=loss_factor)
        fresh.loss(x, noise=noise).total.backward()
        grads.append(torch.cat([p.grad.flatten().clone() for p in fresh.encoder.parameters()]))
    assert torch.equal(grads[0], grads[1])
