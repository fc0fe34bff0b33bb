"""The one device and precision policy of the project, and the run recipe that follows from it.

Device: CUDA, then Apple's MPS, then the CPU. Precision, from what the GPU does natively:

    CUDA, compute capability >= 8.0 (A100, L4, H100, RTX 30xx+)  bf16 autocast, no scaler
    older CUDA (T4 = 7.5, V100 = 7.0)                            float16 autocast + GradScaler
    MPS, CPU                                                     float32

``torch.cuda.is_bf16_supported()`` is not asked: it says True on a T4, where bf16 is emulated
and convolutions fall back to slow kernels. Recipe: ``"cpu"`` (the settings measured on a
2-core CPU) or ``"gpu"`` (bigger batches, images and epochs: each config's ``GPU`` dict);
``"auto"`` picks ``"gpu"`` when CUDA is there. A GPU that ``nvidia-smi`` sees but torch does
not is reported with its fix instead of silently training on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import subprocess
import warnings
from dataclasses import dataclass

import torch

from utils.core import paths

RECIPES = ("auto", "cpu", "gpu")
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 tensor cores
GPU_RELOAD_TOLERANCE = 1e-2  # bf16 keeps 8 mantissa bits: unit-vector entries move by ~4e-3
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA >= 10.2)
MAX_WORKERS = 4  # DataLoader workers on a GPU machine (Colab has 2 vCPUs, a lab GPU more)


@dataclass(frozen=True)
class Precision:
    """How a device computes: autocast dtype (None: plain float32) and gradient scaling."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None: no autocast (float32)
    scaler: bool  # float16 gradients underflow without a GradScaler

    @property
    def name(self) -> str:
        """'bfloat16', 'float16 + GradScaler' or 'float32'."""
        if self.dtype is None:
            return "float32"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} + GradScaler" if self.scaler else name


def get_device() -> torch.device:
    """The best available device: cuda, then mps, then cpu (a GPU torch cannot use: warned)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    warn_unused_gpu()
    return torch.device("cpu")


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability (major, minor) of a CUDA device, e.g. (7, 5) for a T4."""
    return tuple(torch.cuda.get_device_capability(device))


def precision_for(device: torch.device, capability: tuple[int, int] | None = None) -> Precision:
    """The precision policy of ``device`` (``capability`` given: no GPU needs to be asked)."""
    device = torch.device(device)
    if device.type != "cuda":
        return Precision(device, None, False)
    capability = capability or cuda_capability(device)
    if tuple(capability) >= NATIVE_BF16_CAPABILITY:
        return Precision(device, torch.bfloat16, False)
    return Precision(device, torch.float16, True)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast of the policy: bf16 or float16 on CUDA, a no-op on MPS and the CPU."""
    precision = precision_for(device)
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(precision.device.type, dtype=precision.dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only where the policy trains in float16 (older CUDA GPUs)."""
    precision = precision_for(device)
    return torch.amp.GradScaler(precision.device.type, enabled=precision.scaler)


@functools.cache
def nvidia_smi_gpus() -> tuple[str, ...]:
    """The GPUs the NVIDIA driver lists (``nvidia-smi -L``); () without driver or GPU."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in listing.splitlines() if line.startswith("GPU "))


def unused_gpu_message() -> str | None:
    """What to fix when the driver sees a GPU that torch cannot use; None when all is well."""
    gpus = nvidia_smi_gpus()
    if not gpus or torch.cuda.is_available():
        return None
    built = torch.version.cuda or "none (a CPU-only wheel)"
    return (f"nvidia-smi sees {gpus[0]}, but torch {torch.__version__} cannot use it (built for "
            f"CUDA {built}): everything would run on the CPU. Fix: install the torch wheel that "
            "matches the driver (`nvidia-smi` prints the highest CUDA it supports), e.g. "
            "`pip install torch torchvision --index-url https://download.pytorch.org/whl/cu121`"
            ", or update the NVIDIA driver. On Colab: Runtime > Change runtime type > GPU, and "
            "keep Colab's own torch (requirements.txt does not replace it).")


@functools.cache
def warn_unused_gpu() -> None:
    """Warn once per process when a GPU is there but torch runs on the CPU."""
    message = unused_gpu_message()
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_recipe(recipe: str | None = None) -> str:
    """'cpu' or 'gpu': the given recipe, else $RECIPE, else 'auto' (gpu when CUDA is there)."""
    chosen = (recipe or os.environ.get("RECIPE") or "auto").strip().lower()
    if chosen not in RECIPES:
        raise ValueError(f"RECIPE={chosen!r}: choose one of {RECIPES} ('auto': 'gpu' when a "
                         "CUDA GPU is there, else 'cpu')")
    if chosen == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return chosen


def loader_options(device: torch.device | None = None) -> dict:
    """DataLoader settings: on CUDA, persistent workers and pinned memory (the GPU never waits
    for decoding); elsewhere none (images sit decoded in memory; a worker would copy them)."""
    device = device or get_device()
    if device.type != "cuda":
        return {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    workers = max(1, min(MAX_WORKERS, (os.cpu_count() or 2)))
    return {"num_workers": workers, "pin_memory": True, "persistent_workers": True}


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (cuDNN, cuBLAS, torch's own) where they exist; ops without one
    warn instead of failing. Off: cuDNN picks its fastest kernels (autotuning)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def reload_tolerance(device: torch.device) -> float:
    """Largest embedding difference a save -> reload check accepts: 0 on the CPU (float32,
    same kernels), GPU_RELOAD_TOLERANCE under a GPU's reduced-precision autocast."""
    return 0.0 if precision_for(device).dtype is None else GPU_RELOAD_TOLERANCE


def runtime_info(recipe: str | None = None, device: torch.device | None = None) -> dict:
    """Device, GPU, precision, recipe and versions: what a metrics file records of its run."""
    device = device or get_device()
    info = {"device": device.type, "gpu": None, "compute_capability": None,
            "precision": precision_for(device).name, "recipe": resolve_recipe(recipe),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "smoke": paths.smoke_active()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["compute_capability"] = ".".join(map(str, cuda_capability(device)))
    return info


def describe_runtime(recipe: str | None = None) -> str:
    """One line: device, GPU, precision, recipe, torch and CUDA versions."""
    info = runtime_info(recipe)
    gpu = f" ({info['gpu']}, sm {info['compute_capability']})" if info["gpu"] else ""
    return (f"device: {info['device']}{gpu} | precision: {info['precision']} | recipe: "
            f"{info['recipe']} | torch {info['torch']}, CUDA {info['cuda'] or '-'} | "
            f"{info['cpu_threads']} CPU threads")


def main() -> int:
    """``python -m utils.core.device``: print the runtime line and any unused-GPU warning."""
    print(describe_runtime())
    message = unused_gpu_message()
    if message:
        print(f"WARNING: {message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
