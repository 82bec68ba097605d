import os

# As melcore.process.configure_process() does for scripts: idle OpenMP threads sleep (set
# before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# CI has 2 cores; keep every test's torch to them (and deterministic).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a busy 2-core machine can be
    40x slower (spin-waiting). Modules opt in with pytest.mark.usefixtures("one_torch_thread");
    the previous thread count is restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Session fixtures of the hardening tests (built once, shared by tests/test_hardening_*.py).
from hardening_fixtures import tiny_melset, tiny_run  # noqa: E402,F401
