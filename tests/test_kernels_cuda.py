"""The fused loss compiled for a real GPU (not the interpreter) against the float64 reference.

Skipped where there is no CUDA device (CI); run on a GPU machine with the interpreter off:
    TRITON_INTERPRET=0 python -m pytest tests/test_kernels_cuda.py -q
"""
import os

import pytest
import torch

from test_kernels import TOLERANCE, make_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1",
                                reason="needs a CUDA GPU and TRITON_INTERPRET=0 (the compiled kernel)")

if torch.cuda.is_available():
    from unified_latents.kernels import fused_noise_weighted_loss
    from unified_latents.loss import loss_backend, noise_weighted_loss, noise_weighted_loss_reference


def on_gpu(tensors, logsnr, weight, incoming):
    weight = weight.cuda() if isinstance(weight, torch.Tensor) else weight
    return [t.cuda() for t in tensors], logsnr.cuda(), weight, incoming.cuda()


def results(fn, tensors, logsnr, weight, parameterization, incoming, upcast=False, noncontiguous=False):
    leaves = []
    for tensor, need in zip(tensors, (True, True, True)):
        leaf = tensor.double() if upcast else tensor.clone()
        if noncontiguous:
            leaf = leaf.transpose(-1, -2).contiguous().transpose(-1, -2)
        leaves.append(leaf.requires_grad_(need))
    loss = fn(*leaves, logsnr.double() if upcast else logsnr, weight, parameterization)
    (loss * incoming).sum().backward()
    return [loss.detach()] + [torch.zeros_like(leaf) if leaf.grad is None else leaf.grad for leaf in leaves]


def assert_close_to_float64(kernel, reference, dtype):
    "As tests/test_kernels.py's assert_match, against a float64 reference: zero-by-algebra gradients must be ~0."
    largest = max([want.abs().max().item() for want in reference[1:]], default=0.0)
    for index, (got, want) in enumerate(zip(kernel, reference)):
        assert torch.isfinite(got).all()
        scale = want.abs().max().item() + 1e-12
        if index > 0 and scale < 1e-6 * largest:
            assert got.double().abs().max().item() <= 1e-6 * largest, (index, largest)
        else:
            error = (got.double() - want).abs().max().item()
            assert error <= TOLERANCE[dtype] * scale, (index, error, scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("parameterization", ["eps", "x", "v"])
@pytest.mark.parametrize("weighting", ["prior", "decoder", "decoder-elbo", "scalar"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 11), (41, 3, 37, 29), (16, 3, 256, 256)], ids=str)
@pytest.mark.parametrize("incoming_kind", ["ones", "random"])
def test_gpu_kernel_matches_float64_reference(dtype, parameterization, weighting, shape, incoming_kind):
    case = on_gpu(*make_case(shape, dtype, weighting, seed=11))
    if incoming_kind == "ones":  # the forward kernel's gradients, returned as they are
        case = (*case[:3], torch.ones_like(case[3]))
    kernel = results(fused_noise_weighted_loss, *case[:3], parameterization, case[3])
    reference = results(noise_weighted_loss_reference, *case[:3], parameterization, case[3], upcast=True)
    assert kernel[0].dtype == torch.float32 and kernel[1].dtype == dtype
    assert_close_to_float64(kernel, reference, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_non_contiguous(dtype):
    case = on_gpu(*make_case((6, 3, 9, 13), dtype, "prior", seed=12))
    kernel = results(fused_noise_weighted_loss, *case[:3], "v", case[3], noncontiguous=True)
    reference = results(noise_weighted_loss_reference, *case[:3], "v", case[3], upcast=True)
    assert_close_to_float64(kernel, reference, dtype)


def test_gpu_dispatch_and_mean_reduction():
    assert loss_backend(torch.zeros(1, device="cuda")) == "triton"
    case = on_gpu(*make_case((8, 3, 32, 32), torch.float32, "decoder", seed=13))
    grads = []
    for fn in (noise_weighted_loss, noise_weighted_loss_reference):
        p = case[0][0].clone().requires_grad_()
        loss = fn(p, case[0][1], case[0][2], case[1], case[2], "v")
        if fn is noise_weighted_loss:
            assert "Fused" in type(loss.grad_fn).__name__
        loss.mean().backward()  # incoming gradient 1/B: the scaling path of backward
        grads.append(p.grad)
    assert_close_to_float64([grads[0]], [grads[1].double()], torch.float32)


def test_gpu_offsets_beyond_two_to_the_31():
    """B·N > 2³¹ elements: 32-bit offsets would wrap; checked on the last sample's loss and last gradients."""
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip("needs 40 GiB of free GPU memory")
    n = 2**30 + 7
    g = torch.Generator("cuda").manual_seed(14)
    p, x, eps = (torch.randn(2, n, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    p.requires_grad_()
    logsnr = torch.tensor([-2.0, 3.0], device="cuda")
    weight = torch.tensor([0.5, 1.5], device="cuda")
    loss = fused_noise_weighted_loss(p, x, eps, logsnr, weight, "v")
    loss.sum().backward()
    tail = slice(n - 4096, n)
    with torch.no_grad():
        whole = noise_weighted_loss_reference(p[1:].detach(), x[1:], eps[1:], logsnr[1:], weight[1:], "v")
    torch.testing.assert_close(loss[1], whole[0], rtol=1e-4, atol=0)
    piece = p[1:, tail].detach().double().requires_grad_()
    noise_weighted_loss_reference(piece, x[1:, tail].double(), eps[1:, tail].double(), logsnr[1:].double(),
                                  weight[1:].double(), "v").sum().backward()
    scale = piece.grad.abs().max().item()
    assert (p.grad[1, tail].double() - piece.grad[0]).abs().max().item() <= TOLERANCE[torch.bfloat16] * scale


def test_gpu_under_torch_compile():
    """A compiled function that calls the loss (training with --compile does): same loss and gradient as eager."""
    case = on_gpu(*make_case((4, 3, 16, 16), torch.float32, "prior", seed=15))

    def step(p, x, eps, logsnr, weight):
        return noise_weighted_loss(torch.tanh(p), x, eps, logsnr, weight, "v").mean()

    outputs = []
    for fn in (step, torch.compile(step)):
        p = case[0][0].clone().requires_grad_()
        loss = fn(p, case[0][1], case[0][2], case[1], case[2])
        loss.backward()
        outputs.append((loss.detach(), p.grad))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(outputs[1][1], outputs[0][1], rtol=1e-5, atol=1e-7)


def test_gpu_forward_and_backward_never_wait_for_the_gpu():
    """No host synchronisation anywhere in the fused path (sync debug mode turns one into an error)."""
    case = on_gpu(*make_case((8, 3, 32, 32), torch.bfloat16, "decoder", seed=16))
    p = case[0][0].clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for reduce in (torch.sum, torch.mean):
            reduce(noise_weighted_loss(p, case[0][1], case[0][2], case[1], case[2], "v")).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_gpu_forward_and_backward_replay_from_a_cuda_graph():
    """Captured once, replayed on new values: the gradients follow the new inputs (what the benchmark's
    CUDA-graph column relies on)."""
    case = on_gpu(*make_case((8, 3, 32, 32), torch.float32, "prior", seed=17))
    p = case[0][0].clone().requires_grad_()
    x, eps, logsnr, weight = case[0][1].clone(), case[0][2], case[1].clone(), case[2]

    def step():
        fused_noise_weighted_loss(p, x, eps, logsnr, weight, "v").mean().backward()

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            p.grad = None
            step()
    torch.cuda.current_stream().wait_stream(stream)
    p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    with torch.no_grad():  # new values in the captured tensors
        p.copy_(torch.randn_like(p))
        x.copy_(torch.randn_like(x))
        logsnr.copy_(logsnr.flip(0))
    graph.replay()
    expected = results(noise_weighted_loss_reference, [p.detach(), x, eps], logsnr, weight, "v",
                       torch.full((8,), 1 / 8, device="cuda"), upcast=True)
    assert_close_to_float64([p.grad], [expected[1]], torch.float32)
