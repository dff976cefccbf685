import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Small tensors: one intra-op thread is as fast, and avoids OpenMP oversubscription when several
# test processes (DDP tests, CLI subprocesses) share the 2 cores of a CI machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _no_global_rng_leak():
    """Library code must take an explicit generator: the global RNG state is unchanged by a test."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)
