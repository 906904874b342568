"""Test-wide settings. Triton reads TRITON_INTERPRET when it is first imported, so it is set here,
before any test imports it: CPU tensors then run the real fused kernel in Triton's interpreter
wherever the library dispatches to it (tests/test_kernels.py compares it with the reference)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
