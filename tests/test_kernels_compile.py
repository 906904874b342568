"""The fused-loss kernels compiled for real GPU targets (sm_80, sm_90) without a GPU, and their memory accesses read
off the PTX: with 16-byte-aligned tensors and a row length divisible by 16 (what Triton's launcher assumes for
such tensors), every load and store of the big tensors must be a 16-byte vector access. The interpreter, which
runs the other kernel tests, cannot see this; a change to the indexing that lost it would halve the bandwidth.

Compilation runs in a subprocess: tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported here.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import unified_latents.kernels as K

WIDE = ("pred_ptr", "x_ptr", "eps_ptr", "grad_pred_ptr", "grad_x_ptr", "grad_eps_ptr")
report = []
for kernel in (K._noise_weighted_loss_kernel, K._gradient_update_kernel):
    for arch in (80, 90):
        for dtype in ("fp32", "bf16", "fp16"):
            for code, recompute in ((0, False), (1, False), (2, False), (2, True)):
                if recompute and "RECOMPUTE" not in kernel.arg_names:
                    continue
                signature, constexprs, attrs = {}, {}, {}
                for i, name in enumerate(kernel.arg_names):
                    if name in ("PARAMETERIZATION", "BLOCK", "RECOMPUTE") or name.startswith("GRAD_"):
                        signature[name] = "constexpr"
                        constexprs[(i,)] = {"PARAMETERIZATION": code, "BLOCK": 4096,
                                            "RECOMPUTE": recompute}.get(name, name != "GRAD_EPS")
                    else:
                        signature[name] = ("*" + dtype if name in WIDE else "*fp32") if name.endswith("_ptr") else "i32"
                    if name.endswith("_ptr") or name == "N":
                        attrs[(i,)] = [["tt.divisibility", 16]]
                compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                          target=GPUTarget("cuda", arch, 32))
                ptx = compiled.asm["ptx"]
                report.append(dict(kernel=kernel.__name__, arch=arch, dtype=dtype, code=code,
                                   vector_loads=len(re.findall(r"ld\.global\.v4", ptx)),
                                   vector_stores=len(re.findall(r"st\.global\.v4", ptx)),
                                   scalar_loads=len(re.findall(r"ld\.global\.(?:b32|b16)\b", ptx)),
                                   cubin_bytes=len(compiled.asm["cubin"])))
json.dump(report, sys.stdout)
"""


@pytest.fixture(scope="module")
def report():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_variant_compiles_for_ampere_and_hopper(report):
    assert len(report) == 2 * 3 * (3 + 4)  # two targets × three dtypes × (3 loss kernels + 4 update kernels)
    assert all(row["cubin_bytes"] > 0 for row in report)


def test_big_tensors_move_in_16_byte_vectors(report):
    for row in report:
        elements_per_vector = 4 if row["dtype"] == "fp32" else 8
        per_thread = 4096 // (4 * 32) // elements_per_vector  # BLOCK over 4 warps of 32 threads, in 16-byte vectors
        read = 3 if row["code"] == 2 else 2  # v reads p, x, ε; ε-prediction skips x, x-prediction skips ε
        assert row["vector_loads"] == read * per_thread, row  # each input read once
        assert row["vector_stores"] == 2 * per_thread, row  # ∂p and ∂x (∂ε's flag is off here)
        assert row["scalar_loads"] <= 4, row  # only per-sample scalars: λ, w, and the incoming-gradient records
