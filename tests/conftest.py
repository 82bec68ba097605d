import os

# As `import hifigan` does for scripts: idle OpenMP threads sleep (set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# CI has 2 cores; keep every test's torch to them (and deterministic).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Session fixtures of the hardening tests (built once, shared by tests/test_hardening_*.py).
from hardening_fixtures import tiny_melset, tiny_run  # noqa: E402,F401
