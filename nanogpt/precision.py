"""Which autocast dtype a device runs fast: bf16 only where the hardware computes it natively.

bf16 matmuls run ~4x fp32 on a CPU with AVX512_BF16 or AMX (888 vs 208 GFLOP/s measured) and on CUDA
GPUs from Ampere on, but are emulated elsewhere: on an AVX2-only CPU the `cpu` preset trained at
0.07x of its fp32 speed in bf16 (docs/benchmarks.md). So `dtype: auto` asks the hardware, and a
forced bf16 on such a device comes with a warning.

CUDA GPUs before Ampere (T4 = 7.5, V100 = 7.0) have fp16 tensor cores but no bf16 ones: there auto
picks fp16 autocast, which needs a gradient scaler (fp16's range is too small for raw gradients).
That is nanoGPT's and PyTorch's AMP recipe; docs/gpu.md says what is measured and what is not yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nanogpt.config import DTYPES  # re-exported: the dtypes a run may ask for

FP16_TENSOR_CORES = (7, 0)  # Volta: the first CUDA GPUs with fp16 tensor cores
BF16_TENSOR_CORES = (8, 0)  # Ampere


@dataclass(frozen=True)
class Precision:
    dtype: str  # what autocast runs: float32, bfloat16 or float16, never auto
    device_type: str
    bf16_native: bool
    reason: str  # one line: why this dtype on this device
    warning: str | None = None  # set when the choice is known to be slow here

    @property
    def grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.dtype == "float16"

    @property
    def attention_dtype(self) -> str:
        """CPU attention runs in fp32 (nanogpt.model.causal_attention): its fp32 kernel is the
        faster one."""
        return self.dtype if self.device_type == "cuda" else "float32"

    def record(self) -> dict[str, str | bool]:
        """What a run's summary keeps of the choice."""
        return {"dtype": self.dtype, "attention_dtype": self.attention_dtype,
                "bf16_native": self.bf16_native, "grad_scaler": self.grad_scaler,
                "reason": self.reason}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_isa() -> str:
    """The instruction-set class that decides CPU speed here: AMX, AVX512_BF16, AVX512, AVX2 or
    older."""
    flags = cpu_flags()
    for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512_BF16"), ("avx512f", "AVX512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return name
    # torch's own view where /proc/cpuinfo says nothing
    return torch.backends.cpu.get_cpu_capability()


def _tensor_cores(device: torch.device, since: tuple[int, int], dtype: str) -> tuple[bool, str]:
    """Whether a CUDA GPU has `dtype` tensor cores (compute capability `since` on), and its
    capability."""
    major, minor = torch.cuda.get_device_capability(device)
    native = (major, minor) >= since
    return (native, f"CUDA compute capability {major}.{minor} ({'' if native else 'no '}{dtype} "
                    "tensor cores)")


def bf16_native(device: torch.device) -> tuple[bool, str]:
    """Whether `device` multiplies bf16 in hardware, and the fact that decides it."""
    if device.type == "cuda":
        return _tensor_cores(device, BF16_TENSOR_CORES, "bf16")
    if device.type == "cpu":
        # torch's own dispatch checks: the same ones its oneDNN kernels use to pick a bf16 path.
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        isa = cpu_isa()
        return (native, f"CPU {isa}" + ("" if native else " without AVX512_BF16 or AMX: bf16 "
                                                          "matmuls are emulated"))
    return False, f"{device.type} device: bf16 speed unknown"


def fp16_native(device: torch.device) -> tuple[bool, str]:
    """Whether `device` multiplies fp16 in hardware fast, and the fact that decides it."""
    if device.type == "cuda":
        return _tensor_cores(device, FP16_TENSOR_CORES, "fp16")
    if device.type == "cpu":
        # AMX-FP16 (Granite Rapids); elsewhere emulated
        native = bool(torch.cpu._is_amx_fp16_supported())
        return (native, f"CPU {cpu_isa()}" + ("" if native
                                              else " without AMX-FP16: fp16 matmuls are emulated"))
    return True, f"{device.type} device: fp16 is its GPU's native half precision"


def choose(requested: str, device: torch.device) -> Precision:
    """Resolve `auto` for this device; keep an explicit dtype, warning when it is emulated here."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
    native, fact = bf16_native(device)
    if requested == "auto":
        dtype = "bfloat16" if native else "float32"
        if device.type == "cuda" and not native and fp16_native(device)[0]:
            # T4, V100: ~8x the fp32 matmul rate on fp16 tensor cores (65 vs 8 TFLOP/s on a T4's
            # data sheet)
            dtype, fact = "float16", f"{fact}, fp16 ones: fp16 autocast with a gradient scaler"
        return Precision(dtype, device.type, native, f"auto -> {dtype}: {fact}")
    emulated = requested == "bfloat16" and not native
    if requested == "float16":
        fp16, fact = fp16_native(device)
        emulated = not fp16
    warning = (f"dtype={requested} on a {fact}, which runs far slower than float32 here; "
               "use dtype=auto (or float32) unless you mean to measure the "
               "emulation") if emulated else None
    return Precision(requested, device.type, native, f"{requested} as set: {fact}", warning)
