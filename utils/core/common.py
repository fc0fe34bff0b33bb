"""Small helpers every stage needs: seeding, atomic writes, JSON, stage configs (the device and
precision policy is ``utils.core.device``)."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.core.device import resolve_recipe
from utils.core.paths import env_flag


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU run repeats its numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def make_generator(seed: int) -> torch.Generator:
    """A seeded CPU generator for DataLoader shuffling and random splits."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temp name carries the writer's process id, so the leftovers of a writer that was
    killed (no ``finally`` runs on SIGKILL or a dead kernel) are removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, f".{path.name}.", ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(folder: Path, prefix: str, suffix: str) -> list[Path]:
    """Delete ``prefix<pid>.<random><suffix>`` entries of ``folder`` whose process is gone."""
    removed = []
    for entry in folder.glob(f"{glob.escape(prefix)}*{suffix}"):
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def default_mode(directory: bool = False) -> int:
    """Permissions a plain open()/mkdir() would give (mkstemp/mkdtemp make private 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars, paths and tuples so that ``json.dumps`` accepts them."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        return to_jsonable(value.item() if value.ndim == 0 else value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON: strict readers (jq, browsers) reject the whole file
    return value


def save_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False)
    return write_text(path, text + "\n")


def load_json(path: str | Path) -> dict:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def resolve_smoke(smoke: bool | None) -> bool:
    """A notebook's ``SMOKE`` parameter: ``None`` means "read the SMOKE environment variable"."""
    return env_flag("SMOKE") if smoke is None else bool(smoke)


def stage_values(config_classes: tuple[type, ...], smoke: bool | None,
                 overrides: dict | None, recipe: str | None) -> dict:
    """Field values of a stage: each class's ``GPU`` dict on the GPU recipe (``recipe``: "auto",
    "cpu", "gpu"; None reads $RECIPE), then each class's ``SMOKE`` dict in smoke mode, then
    ``overrides``."""
    gpu, values = resolve_recipe(recipe) == "gpu", {}
    for name in ("GPU",) * gpu + ("SMOKE",) * resolve_smoke(smoke):
        for config_class in config_classes:
            values.update(getattr(config_class, name, {}))
    values.update(overrides or {})
    return values


def route_fields(config_classes: tuple[type, ...], values: dict) -> list[dict]:
    """Split ``values`` by the class that has each field (one dict per class); an unknown name
    raises with the list of valid fields."""
    routed = []
    for config_class in config_classes:
        names = {f.name for f in dataclasses.fields(config_class)}
        routed.append({k: v for k, v in values.items() if k in names})
    unknown = sorted(set(values) - {k for part in routed for k in part})
    if unknown:
        valid = sorted(f.name for c in config_classes for f in dataclasses.fields(c))
        classes = " / ".join(c.__name__ for c in config_classes)
        raise ValueError(f"{classes}: unknown field(s) {unknown}; valid: {valid}")
    return routed


def make_config(config_class: type, smoke: bool | None = None, overrides: dict | None = None,
                recipe: str | None = None):
    """Build a stage config: defaults, then ``config_class.GPU`` on the GPU recipe, then
    ``config_class.SMOKE`` in smoke mode, then overrides.

    ``GPU`` and ``SMOKE`` are class-level dicts of field values: the GPU recipe's batch sizes,
    image sizes and epochs, and the smoke mode's tiny data and epochs (the notebook runs in
    seconds). Unknown override names raise with the list of valid fields.
    """
    values = stage_values((config_class,), smoke, overrides, recipe)
    return config_class(**route_fields((config_class,), values)[0])


def make_configs(model_class: type, train_class: type, smoke: bool | None = None,
                 overrides: dict | None = None, recipe: str | None = None) -> tuple:
    """(architecture config, run settings) of a stage, as ``make_config`` builds one: a single
    ``overrides`` dict (a notebook's OVERRIDES) sets fields of both, each name going to the
    class that has it."""
    values = stage_values((model_class, train_class), smoke, overrides, recipe)
    model_values, train_values = route_fields((model_class, train_class), values)
    return model_class(**model_values), train_class(**train_values)


def replace_fields(configs: tuple, **changes: Any) -> tuple:
    """``dataclasses.replace`` over a stage's configs (architecture, run settings): each change
    goes to the config that has the field; an unknown name raises."""
    routed = route_fields(tuple(type(c) for c in configs), changes)
    return tuple(dataclasses.replace(c, **part) for c, part in zip(configs, routed, strict=True))


def require_positive(config: Any, names: tuple[str, ...], at_least: dict | None = None) -> None:
    """Raise a ValueError naming the first field of ``names`` that is not a number > 0 (or
    below its minimum in ``at_least``), before anything is built or trained with it."""
    for name in names:
        value, floor = getattr(config, name), (at_least or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
                (floor is not None and value < floor):
            need = f">= {floor}" if floor is not None else "> 0"
            raise ValueError(f"{type(config).__name__}.{name}={value!r}: must be a number "
                             f"{need}. Fix: change it in OVERRIDES (or --set {name}=...).")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}


def config_from_dict(config_class: type, values: dict):
    """A stage config from ``asdict`` output (a checkpoint's ``config``), unknown keys dropped.

    A field the stored dict lacks takes the class's ``BEFORE`` value when it has one (what
    files written before that field existed meant), else today's default."""
    names = {field.name for field in dataclasses.fields(config_class)}
    before = {k: v for k, v in getattr(config_class, "BEFORE", {}).items() if k not in values}
    return config_class(**before, **{k: v for k, v in values.items() if k in names})
