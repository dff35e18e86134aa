"""Where torch work runs and at which precision: one choice for training, embedding and
fine-tuning alike.

* :func:`resolve_device`: ``auto`` is CUDA when available, else the CPU; ``cuda`` is the
  GPU of this process's local rank; asking for CUDA without it is an error.
* :func:`autocast`: bf16 autocast on a CUDA GPU that supports bf16 (Ampere and later);
  nothing (fp32; TF32 matmuls on GPUs where :func:`enable_tf32` was called) on older GPUs
  and on the CPU, whose bf16 matmuls are emulated (slower than fp32) unless it has
  AMX/AVX512-BF16.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str = "auto", local_rank: int = 0, cuda_available: bool | None = None) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` means the GPU of ``local_rank``
    (``cuda:<local_rank>``; 0 outside a data-parallel run); ``cuda:N`` and ``cpu`` are
    taken as given. Raises ``RuntimeError`` for a CUDA device on a machine without CUDA."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if cuda_available else "cpu"
    if name.startswith("cuda") and not cuda_available:
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use device auto or cpu)")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def autocast_dtype(device: torch.device, bf16_supported: bool | None = None) -> torch.dtype | None:
    """bf16 on a CUDA device that supports it, else None (plain fp32).
    ``bf16_supported`` defaults to ``torch.cuda.is_bf16_supported()``."""
    if torch.device(device).type != "cuda":
        return None
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else None


def autocast(device: torch.device):
    """The mixed-precision context of forward passes on ``device`` (reusable):
    ``torch.autocast`` at :func:`autocast_dtype`, or a no-op context when that is None."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions for the fp32 work on a CUDA device (outside autocast)."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
