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
    after = torch.random.get_rng_state()
    torch.random.set_rng_state(state)
    assert torch.equal(after, state), "the test (or the library code it ran) changed torch's global RNG state"


@pytest.fixture
def global_rng():
    """Declared by a test whose own body seeds or draws from torch's global RNG (``torch.manual_seed``, a
    module's random initialisation): the state is restored after it, so the check above still guards the
    library code every other test runs."""
    with torch.random.fork_rng(devices=[]):
        yield
