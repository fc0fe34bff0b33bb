"""``make gpu-check``: on a machine with a CUDA GPU, the course chain (notebooks 00-05) on the GPU
recipe, each notebook timed, then the GPU-sensitive tests (feature cache tolerance, the
simulated Colab runtime) on the real device. Writes ``results/metrics/gpu_check.json``: the
runtime (GPU, precision, versions), each notebook's seconds and the headline test figures of
01 and 03. Sized to finish in under 10 minutes on one recent GPU (data and Flickr8k present).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from utils.core import paths
from utils.core.common import load_json, save_json
from utils.core.device import describe_runtime, runtime_info, unused_gpu_message
from utils.handin.execute import HandinError, execute_notebooks

CHAIN = ("00", "01", "02", "03", "04", "05")
GPU_TESTS = ("tests/test_features.py", "tests/test_colab.py", "tests/test_gpu.py")


def headline_figures() -> dict:
    """The figures of the course chain a GPU run is compared on (None when absent)."""
    def read(name: str) -> dict:
        path = paths.metrics_dir() / name
        return load_json(path) if path.is_file() else {}

    cnn, clip = read("01_cnn.json"), read("03_clip.json")
    test = clip.get("test", {})
    return {
        "01_accuracy": {k: v.get("test", {}).get("accuracy")
                        for k, v in cnn.get("variants", {}).items()},
        "03_t2i_R@5": test.get("text_to_image", {}).get("R@5"),
        "03_i2t_R@5": test.get("image_to_text", {}).get("R@5"),
        "03_zero_shot": test.get("zero_shot_accuracy"),
        "03_reload_max_abs_diff": clip.get("reload_max_abs_diff"),
    }


def run_chain_timed(numbers: tuple[str, ...]) -> dict[str, float]:
    """Execute the notebooks one by one on the GPU recipe -> seconds of each."""
    seconds = {}
    for number in numbers:
        start = time.perf_counter()
        execute_notebooks([number], parameters={"RECIPE": "gpu"})
        seconds[number] = round(time.perf_counter() - start, 1)
        print(f"[gpu-check] {number}: {seconds[number]} s", flush=True)
    return seconds


def run_gpu_tests() -> dict:
    """The GPU-sensitive tests, run here on the real device -> return code and seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *GPU_TESTS],
                          cwd=paths.ROOT, check=False)
    return {"returncode": done.returncode, "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    """Run the check; exit 2 without a usable GPU, 1 when a notebook or test fails."""
    if not torch.cuda.is_available():
        print("[gpu-check] no CUDA GPU here: " + (unused_gpu_message() or "nothing to check "
              "(run it on a GPU machine, e.g. Colab with a T4)"), file=sys.stderr)
        return 2
    os.environ["RECIPE"] = "gpu"
    print(describe_runtime("gpu"), flush=True)
    report = {"runtime": runtime_info("gpu"), "notebooks_s": {}, "tests": None}
    status = 0
    try:
        report["notebooks_s"] = run_chain_timed(CHAIN)
    except HandinError as error:
        print(f"[gpu-check] {error}", file=sys.stderr)
        status = 1
    report["figures"] = headline_figures()
    report["tests"] = run_gpu_tests()
    status = status or int(report["tests"]["returncode"] != 0)
    print(save_json(paths.metrics_path("gpu_check.json"), report))
    return status


if __name__ == "__main__":
    sys.exit(main())
