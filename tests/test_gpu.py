"""The device and precision policy, the GPU recipe, and every model path of notebooks 01-08 on
a simulated CUDA GPU (tests/simcuda.py): no tensor of the GPU meets a CPU tensor, no ``.numpy()``
of a GPU tensor, and training reads the loss back once per epoch, not once per batch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from inprocess import run_notebook
from simcuda import SimCudaTensor, simulated_cuda
from synthetic import make_synthetic_flickr8k, make_synthetic_subset

from utils.core import device as device_policy
from utils.core import paths
from utils.core.common import make_config, make_configs
from utils.core.device import (
    autocast,
    get_device,
    grad_scaler,
    loader_options,
    precision_for,
    reload_tolerance,
    resolve_recipe,
    runtime_info,
)
from utils.models.clip import ClipConfig
from utils.models.cnn import CnnConfig
from utils.train.configs import CaptionerTrainConfig, ClipTrainConfig, CnnTrainConfig

NOTEBOOKS = paths.NOTEBOOKS_DIR
NEEDS = {"03": ["01", "02"], "04": ["03"], "05": ["03"]}


# --- the precision policy, with faked capabilities ------------------------------------------
@pytest.mark.parametrize("capability, dtype, scaler", [
    ((7, 5), torch.float16, True),  # T4: bf16 is emulated there, float16 has tensor cores
    ((7, 0), torch.float16, True),  # V100
    ((8, 0), torch.bfloat16, False),  # A100
    ((8, 9), torch.bfloat16, False),  # L4
    ((9, 0), torch.bfloat16, False),  # H100
])
def test_cuda_precision_follows_the_compute_capability(capability, dtype, scaler) -> None:
    precision = precision_for(torch.device("cuda"), capability)
    assert (precision.dtype, precision.scaler) == (dtype, scaler)


@pytest.mark.parametrize("kind", ["cpu", "mps"])
def test_cpu_and_mps_compute_in_float32(kind) -> None:
    precision = precision_for(torch.device(kind))
    assert precision.dtype is None and not precision.scaler and precision.name == "float32"
    assert reload_tolerance(torch.device(kind)) == 0.0


def test_a_simulated_t4_trains_in_float16_with_a_scaler_although_it_claims_bf16() -> None:
    with simulated_cuda((7, 5)):
        assert torch.cuda.is_bf16_supported()  # what a T4 says; the policy does not ask it
        device = get_device()
        assert device.type == "cuda"
        with autocast(device):
            assert torch.get_autocast_dtype("cuda") == torch.float16
        assert grad_scaler(device).is_enabled()
        info = runtime_info()
        assert info["gpu"] == "Tesla T4 (simulated)" and info["compute_capability"] == "7.5"
        assert info["precision"] == "float16 + GradScaler" and info["recipe"] == "gpu"
        assert loader_options(device)["pin_memory"] and loader_options(device)["num_workers"]
        assert reload_tolerance(device) > 0


def test_a_simulated_a100_uses_bf16_without_scaler() -> None:
    with simulated_cuda((8, 0), "NVIDIA A100 (simulated)"):
        device = get_device()
        with autocast(device):
            assert torch.get_autocast_dtype("cuda") == torch.bfloat16
        assert not grad_scaler(device).is_enabled()
        assert runtime_info()["precision"] == "bfloat16"


def test_a_gpu_that_torch_cannot_use_is_named_with_its_fix(monkeypatch) -> None:
    monkeypatch.setattr(device_policy, "nvidia_smi_gpus",
                        lambda: ("GPU 0: Tesla T4 (UUID: GPU-0)",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_policy.warn_unused_gpu.cache_clear()
    message = device_policy.unused_gpu_message()
    assert "Tesla T4" in message and "cannot use it" in message
    assert "pip install torch" in message and "driver" in message
    with pytest.warns(RuntimeWarning, match="cannot use it"):
        assert get_device().type == "cpu"
    device_policy.warn_unused_gpu.cache_clear()


def test_no_warning_without_nvidia_driver(monkeypatch) -> None:
    monkeypatch.setattr(device_policy, "nvidia_smi_gpus", lambda: ())
    device_policy.warn_unused_gpu.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_device()
    assert device_policy.unused_gpu_message() is None


# --- the recipes ----------------------------------------------------------------------------
def test_recipe_auto_follows_the_device(monkeypatch) -> None:
    monkeypatch.delenv("RECIPE", raising=False)
    here = "gpu" if torch.cuda.is_available() else "cpu"  # make test also runs on a GPU
    assert resolve_recipe("auto") == here and resolve_recipe(None) == here
    with simulated_cuda():
        assert resolve_recipe("auto") == "gpu"
        assert resolve_recipe("cpu") == "cpu"
    with pytest.raises(ValueError, match="RECIPE='tpu'"):
        resolve_recipe("tpu")


def test_the_gpu_recipe_changes_the_settings_and_smoke_and_overrides_win(monkeypatch) -> None:
    monkeypatch.setenv("RECIPE", "cpu")
    cpu = make_config(ClipTrainConfig, False)
    gpu = make_config(ClipTrainConfig, False, recipe="gpu")
    assert (cpu.batch_size, cpu.epochs) == (32, 15)
    assert (gpu.batch_size, gpu.epochs) == (64, 15)
    # One OVERRIDES dict and the recipes reach both configs of a stage, each field its own.
    cnn, cnn_training = make_configs(CnnConfig, CnnTrainConfig, False, {"lr": 0.01}, "gpu")
    assert (cnn.image_size, cnn_training.batch_size, cnn_training.lr) == (128, 64, 0.01)
    assert make_config(CaptionerTrainConfig, False, recipe="gpu").epochs == 12
    smoke = make_config(ClipTrainConfig, True, {"epochs": 3}, recipe="gpu")
    assert (smoke.batch_size, smoke.epochs) == (8, 3)  # SMOKE over GPU, OVERRIDES over both
    with pytest.raises(ValueError, match="unknown field.*'epoch'"):
        make_configs(ClipConfig, ClipTrainConfig, False, {"epoch": 3})
    monkeypatch.setenv("RECIPE", "gpu")
    assert make_config(ClipTrainConfig, False).batch_size == 64


# --- every model path of the notebooks on a simulated T4 -------------------------------------
@pytest.fixture(scope="module")
def simulated_env(tmp_path_factory):
    """A small course subset and a small Flickr8k, and models/results in a temporary folder."""
    base = tmp_path_factory.mktemp("simulated_gpu")
    make_synthetic_subset(base / "data" / paths.SUBSET_NAME, per_class=12)
    flickr8k = make_synthetic_flickr8k(base / "flickr8k")
    env = {"DATA_DIR": str(base / "data"), "FLICKR8K_DIR": str(flickr8k),
           "MODELS_DIR": str(base / "models"), "RESULTS_DIR": str(base / "results"),
           "SMOKE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("RECIPE", "")  # recorded: the notebooks' setup sets it, it must not leak
        patch.delenv("RECIPE")
        yield base


DONE: dict[str, object] = {}


def run_on_simulated_gpu(number: str) -> object:
    """Run notebook ``number`` (after the ones it needs) on a simulated T4 -> its Record."""
    for needed in NEEDS.get(number, []):
        run_on_simulated_gpu(needed)
    if number not in DONE:
        path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
        with simulated_cuda() as record:
            run_notebook(path, {"SMOKE": True})
        DONE[number] = record
    return DONE[number]


@pytest.mark.slow
@pytest.mark.parametrize("number", ["00", "01", "02", "03", "04", "05", "06", "07", "08"])
def test_every_notebook_runs_on_a_simulated_gpu_without_mixing_devices(simulated_env, number):
    record = run_on_simulated_gpu(number)
    assert not record.problems(), f"notebook {number} on a simulated GPU:\n" + "\n".join(
        dict.fromkeys(record.problems()))


@pytest.mark.slow
def test_notebook_07_trains_smallbert_on_the_gpu_when_step_2_is_absent(simulated_env,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))  # no 02_smallbert.pt there
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("RECIPE", "auto")  # the notebook's setup sets it: restored after
    with simulated_cuda() as record:
        namespace = run_notebook(next(NOTEBOOKS.glob("07_*.ipynb")), {"SMOKE": True})
    assert namespace["inputs"].notes["smallbert"].startswith("trained here")
    assert not record.problems(), "\n".join(dict.fromkeys(record.problems()))


@pytest.mark.slow
def test_the_search_page_embeds_queries_on_the_gpu(simulated_env) -> None:
    from PIL import Image

    from utils.app.catalog import load_searcher
    from utils.eval.search import embed_query_image, embed_query_text, search_images

    run_on_simulated_gpu("03")
    with simulated_cuda() as record:
        searcher = load_searcher(paths.models_dir() / "03_clip.pt")
        assert next(searcher.model.parameters()).device.type == "cuda"
        query = embed_query_text(searcher.model, searcher.tokenizer, "a dog on the grass")
        hits, _ = search_images(searcher.gallery, query, 5)
        image = Image.new("RGB", (80, 60), (30, 90, 210))
        picture = embed_query_image(searcher.model, image)
    assert len(hits) == 5 and picture.shape == query.shape
    assert not isinstance(query, SimCudaTensor)  # the page gets CPU embeddings back
    assert not record.problems(), "\n".join(dict.fromkeys(record.problems()))


# --- the GPU does not wait --------------------------------------------------------------------
def training_syncs(batches: int, tmp_path: Path) -> list[str]:
    """Host reads made by the project's code while CLIP trains one epoch of ``batches``."""
    from utils.train.loop import fit

    model = torch.nn.Linear(4, 2)
    data = torch.utils.data.TensorDataset(torch.randn(batches * 4, 4))

    def step(m, batch, device):
        loss = m(batch[0].to(device)).pow(2).mean()
        return loss, len(batch[0]), {"acc": (loss > 0).sum()}

    with simulated_cuda() as record:
        loader = torch.utils.data.DataLoader(data, batch_size=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        stopper = device_policy_stopper()
        fit(model, loader, step, lambda m: {"val_loss": 0.0}, optimizer, None, stopper, 1,
            torch.device("cuda"))
    return [s for s in record.syncs if s.startswith("loop.py")]


def device_policy_stopper():
    """An EarlyStopping on a constant validation value (one epoch is run)."""
    from utils.train.loop import EarlyStopping

    return EarlyStopping("val_loss", "min", patience=1)


def test_training_reads_the_loss_once_per_epoch_not_per_batch(tmp_path) -> None:
    few, many = training_syncs(4, tmp_path), training_syncs(40, tmp_path)
    assert len(many) == len(few), f"host syncs grow with the batches: {many}"
    assert len(few) <= 6, few


def test_the_feature_cache_key_names_the_device_and_precision(tmp_path, monkeypatch) -> None:
    from utils.models import features

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8 not decoded here")
    on_cpu = features.cache_path([image], "efficientnet_lite0", 224)
    with simulated_cuda((7, 5)):
        on_t4 = features.cache_path([image], "efficientnet_lite0", 224)
    with simulated_cuda((8, 0)):
        on_a100 = features.cache_path([image], "efficientnet_lite0", 224)
    assert len({on_cpu, on_t4, on_a100}) == 3
    assert on_t4.name.endswith("_cuda-float16.pt") and on_a100.name.endswith("_cuda-bfloat16.pt")
    assert "cuda" not in on_cpu.name  # CPU caches keep the key they always had


def test_deterministic_switch_sets_the_library_flags(monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        device_policy.set_deterministic(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        device_policy.set_deterministic(False)
        torch.use_deterministic_algorithms(before)
    assert not torch.backends.cudnn.deterministic
