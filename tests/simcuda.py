"""A simulated CUDA device on the CPU: GPU device logic proven without a GPU.

``simulated_cuda()`` makes torch believe a CUDA GPU is there (a T4 by default: compute
capability 7.5) and turns every tensor that code sends to ``"cuda"`` into a ``SimCudaTensor``:
its data stays on the CPU, but its ``.device`` reads ``cuda:0``, and every operation on it goes
through a ``TorchFunctionMode`` that records what a real GPU would refuse or pay for:

* ``mixing``: an operation that combines a simulated-GPU tensor with a plain CPU tensor of one
  or more dimensions (a real GPU raises "Expected all tensors to be on the same device"), e.g.
  CPU token ids given to an embedding on the GPU; CPU 0-dim scalars, CPU indices of a GPU
  tensor and cross-device copies (``copy_``, ``to``) are allowed, as on a GPU;
* ``numpy_calls``: ``.numpy()`` on a GPU tensor (a TypeError on a real GPU);
* ``syncs``: reads of a GPU value by the host (``item``, ``tolist``, ``float()``, ``bool()``...),
  with the project function that asked, to count host syncs inside training loops.

Factories called with ``device="cuda"`` (``torch.zeros(..., device=x.device)``) build CPU
tensors marked as GPU ones; ``.cpu()`` gives plain tensors back; module parameters become
``SimCudaTensor`` (swapped in place by ``Module.to``), and their gradients are read as such.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.utils.data._utils.pin_memory as pin_memory_module
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
PROJECT = str(Path(__file__).resolve().parents[1] / "utils")
SYNCS = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__"}
# Operations that legitimately take tensors of both devices (as on a real GPU).
CROSS_DEVICE = {"copy_", "__getitem__", "__setitem__", "__deepcopy__",
                "_has_compatible_shallow_copy_type", "__reduce_ex__", "__repr__", "__format__"}


# RNN packing: the batch sizes / lengths they take and return live on the CPU even for GPU
# inputs (a real GPU requires it).
CPU_SECOND_OUTPUT = {"_pack_padded_sequence", "_pad_packed_sequence"}
CPU_LENGTHS = {"_pack_padded_sequence", "_pad_packed_sequence", "lstm", "gru", "rnn_tanh",
               "rnn_relu"}


class SimCudaTensor(torch.Tensor):
    """A CPU tensor that says it lives on ``cuda:0``."""

    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    def get_device(self) -> int:
        return 0

    def __deepcopy__(self, memo: dict) -> SimCudaTensor:
        # A memo of its own: the plain view is a temporary, whose id Python may give again.
        copied = to_sim(self.as_subclass(torch.Tensor).__deepcopy__({}))
        if getattr(self, "_is_param", False):
            copied._is_param = True
        memo[id(self)] = copied
        return copied


def to_sim(value):
    """A plain tensor -> the same data marked as on the GPU (anything else unchanged)."""
    if isinstance(value, torch.Tensor) and not isinstance(value, SimCudaTensor):
        return value.as_subclass(SimCudaTensor)
    return value


def to_plain(value):
    """A simulated-GPU tensor -> the same data as a plain CPU tensor."""
    return value.as_subclass(torch.Tensor) if isinstance(value, SimCudaTensor) else value


def is_cuda(device) -> bool:
    """True for 'cuda', 'cuda:0', torch.device('cuda') or a CUDA ordinal."""
    if device is None or isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True
    return torch.device(device).type == "cuda"


def getter_name(func) -> str | None:
    """'grad' for the getter of Tensor.grad (attribute reads go through the mode too)."""
    owner = getattr(func, "__self__", None)
    return owner.__name__ if type(owner).__name__ == "getset_descriptor" else None


def direct_caller() -> str:
    """'module.py:function' of the frame that made the call when it is project code, else ''
    (a host read inside torch, e.g. GradScaler's own check, is torch's, not ours)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename == __file__ or frame.filename.endswith("torch/overrides.py"):
            continue
        if frame.filename.startswith(PROJECT):
            return f"{Path(frame.filename).name}:{frame.name}"
        return ""
    return ""


@dataclass
class Record:
    """What a simulated run did that a real GPU would refuse or pay for."""

    mixing: list[str] = field(default_factory=list)
    numpy_calls: list[str] = field(default_factory=list)
    syncs: list[str] = field(default_factory=list)  # project function of each host read

    def problems(self) -> list[str]:
        """Every mixing and every .numpy() on a GPU tensor, with where it happened."""
        return [*self.mixing, *self.numpy_calls]


def where() -> str:
    """The last project frames of the stack, for a readable report."""
    frames = [f for f in traceback.extract_stack()[:-2] if f.filename.startswith(PROJECT)]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[::-1][:4])


class SimulatedCuda(TorchFunctionMode):
    """Sends 'cuda' tensors to the CPU marked as GPU ones, and records device misuse."""

    def __init__(self) -> None:
        super().__init__()
        self.record = Record()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            return self.move(func, args, kwargs)
        if func is torch.Tensor.cpu:
            return self.to_cpu(args[0]) if isinstance(args[0], SimCudaTensor) else \
                func(*args, **kwargs)
        if func is torch.Tensor.pin_memory:
            return args[0]
        if getter_name(func) == "grad" and isinstance(args[0], SimCudaTensor):
            return to_sim(func(*args, **kwargs))  # autograd makes plain gradients
        if isinstance(args[0] if args else None, SimCudaTensor):
            if func is torch.Tensor.numpy:
                self.record.numpy_calls.append(f".numpy() on a GPU tensor at {where()}")
                return to_plain(args[0]).numpy(**kwargs)
            if name in SYNCS and (caller := direct_caller()):
                self.record.syncs.append(caller)
        if is_cuda(kwargs.get("device")):
            return tree_map(to_sim, func(*args, **{**kwargs, "device": "cpu"}))
        self.check_mixing(name, args, kwargs)
        result = func(*args, **kwargs)
        if name in CPU_SECOND_OUTPUT:  # a real GPU keeps these sequence lengths on the CPU
            result = (result[0], to_plain(result[1]), *result[2:])
        return result

    def move(self, func, args, kwargs):
        """Tensor.to / Tensor.cuda: 'cuda' gives a marked copy, 'cpu' a plain one."""
        tensor = args[0]
        if func is torch.Tensor.cuda:
            device, dtype = CUDA, None
        else:
            parse = {k: v for k, v in kwargs.items() if k != "copy"}
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **parse)
        if device is not None and device.type == "cuda":
            with torch._C.DisableTorchFunctionSubclass():
                moved = torch.Tensor.to(tensor, "cpu", dtype=dtype,
                                        copy=not isinstance(tensor, SimCudaTensor))
            return to_sim(moved)
        if device is not None and device.type == "cpu" and isinstance(tensor, SimCudaTensor):
            moved = self.to_cpu(tensor)
            return moved.to(dtype) if dtype is not None else moved
        return func(*args, **kwargs)

    @staticmethod
    def to_cpu(tensor: SimCudaTensor) -> torch.Tensor:
        """A plain CPU copy (autograd kept), as ``.cpu()`` of a GPU tensor gives."""
        with torch._C.DisableTorchFunctionSubclass():
            return to_plain(torch.Tensor.clone(tensor))

    def check_mixing(self, name: str, args, kwargs) -> None:
        """Record an operation that mixes GPU tensors with CPU tensors of 1+ dimensions."""
        if name in CROSS_DEVICE:
            return
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if not any(isinstance(t, SimCudaTensor) for t in tensors):
            return
        plain = [t for t in tensors if not isinstance(t, SimCudaTensor) and t.dim() > 0
                 and not (name in CPU_LENGTHS and t.dim() == 1 and not t.is_floating_point())]
        if plain:
            shapes = ", ".join(f"{'cuda' if isinstance(t, SimCudaTensor) else 'cpu'}"
                               f"{tuple(t.shape)}" for t in tensors[:4])
            self.record.mixing.append(f"{name}({shapes}) at {where()}")


def copying_load_state_dict(load):
    """Module.load_state_dict that copies into the parameters (as torch does by default)
    instead of swapping them: an LSTM's weak references to its weights forbid a swap."""
    def load_state_dict(module, *args, **kwargs):
        swap = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(False)
        try:
            return load(module, *args, **kwargs)
        finally:
            torch.__future__.set_swap_module_params_on_conversion(swap)
    return load_state_dict


def fake_capability(capability: tuple[int, int]):
    """A stand-in for torch.cuda.get_device_capability."""
    return lambda *args, **kwargs: capability


@contextlib.contextmanager
def simulated_cuda(capability: tuple[int, int] = (7, 5), name: str = "Tesla T4 (simulated)"
                   ) -> Iterator[Record]:
    """Inside the block torch sees one CUDA GPU of ``capability``; yields the Record."""
    patches = {
        (torch.cuda, "is_available"): lambda: True,
        (torch.cuda, "device_count"): lambda: 1,
        (torch.cuda, "get_device_capability"): fake_capability(capability),
        (torch.cuda, "get_device_name"): lambda *args, **kwargs: name,
        (torch.cuda, "is_bf16_supported"): lambda *args, **kwargs: True,  # as a T4 claims
        (torch.cuda, "current_device"): lambda: 0,
        (torch.cuda, "set_device"): lambda *args, **kwargs: None,
        (torch.cuda, "synchronize"): lambda *args, **kwargs: None,
        (torch.accelerator, "current_accelerator"): lambda *args, **kwargs: None,
        (torch.backends.cudnn, "is_acceptable"): lambda tensor: False,  # no cuDNN RNN packing
        (pin_memory_module, "pin_memory"): lambda data, device=None: data,
        (torch.nn.Module, "load_state_dict"): copying_load_state_dict(
            torch.nn.Module.load_state_dict),
    }
    saved = {key: getattr(*key) for key in patches}
    for (owner, attribute), value in patches.items():
        setattr(owner, attribute, value)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # parameters stay the same
    mode = SimulatedCuda()
    try:
        with mode, warnings.catch_warnings():
            # torch sees no real accelerator to pin memory for: a warning of the simulation only
            warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true")
            yield mode.record
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
        for (owner, attribute), value in saved.items():
            setattr(owner, attribute, value)
