"""Test-wide settings: no network, deterministic CPU runs, and a quiet transformers."""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

# The example scripts import their shared plumbing (`utils_aetnet.py`, `utils_aetnet_data.py`) from their own folder,
# which is on `sys.path` when a script runs; tests that import a script or those modules in-process need it too.
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.append(str(EXAMPLES_DIR))

# Devices of the device-parametrised tests (fast paths, mixed precision): the CPU, and a GPU where one is present. The
# GPU cases are absent, not skipped, on a machine without one (as in CI); `pytest -k cuda` runs only them.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture
def restore_logging():
    """For tests that run an example script in-process: the script sets the log levels and thread count globally."""
    import datasets
    import transformers

    verbosity = transformers.utils.logging.get_verbosity()
    datasets_verbosity = datasets.utils.logging.get_verbosity()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model is faster on one thread of a busy 2-core machine
    yield
    transformers.utils.logging.set_verbosity(verbosity)
    datasets.utils.logging.set_verbosity(datasets_verbosity)
    torch.set_num_threads(threads)


def load_example(name: str):
    """Import `examples/<name>.py` as a module, so that a test can call its `main()` in-process."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module
