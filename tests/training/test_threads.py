"""The thread policy: the tuner keeps the faster count, probes again later, and explicit counts win."""

import pytest
import torch

from moldiff.training.threads import ThreadTuner, explicit_threads

from .toy import toy_config


class FakeClock:
    """Each step takes ``cost[threads]`` seconds of this clock."""

    def __init__(self, cost):
        self.cost, self.now = cost, 0.0

    def __call__(self):
        return self.now

    def run(self, tuner, steps):
        for _ in range(steps):
            tuner.before_step()
            self.now += self.cost[torch.get_num_threads()]
            tuner.after_step()


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("cost, best", [({1: 0.10, 2: 0.06}, 2), ({1: 0.10, 2: 0.50}, 1), ({1: 0.1, 2: 0.1}, 1)])
def test_the_tuner_keeps_the_faster_count(restore_threads, cost, best):
    clock = FakeClock(cost)
    tuner = ThreadTuner((1, 2), warmup=2, probe=3, every=100.0, clock=clock)
    clock.run(tuner, 2 + 6)  # warm-up, then 3 steps of each count, alternating
    assert tuner.choice == best and torch.get_num_threads() == best and len(tuner.history) == 1
    assert tuner.history[0][2] == pytest.approx(cost)
    clock.run(tuner, 5)
    assert len(tuner.history) == 1  # no new probe before `every` seconds


def test_the_tuner_probes_again_and_follows_a_changed_machine(restore_threads):
    clock = FakeClock({1: 0.10, 2: 0.06})
    tuner = ThreadTuner((1, 2), warmup=0, probe=2, every=1.0, clock=clock)
    clock.run(tuner, 4)
    assert tuner.choice == 2
    clock.cost = {1: 0.10, 2: 0.40}  # another job arrived: two threads now lose
    clock.run(tuner, 20)
    assert tuner.choice == 1 and [h[1] for h in tuner.history][:2] == [2, 1]


def test_one_candidate_is_inert(restore_threads):
    torch.set_num_threads(1)
    tuner = ThreadTuner((1,))
    assert not tuner.active
    tuner.before_step()
    assert tuner.after_step() is None and torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        ThreadTuner((0, 2))


def test_explicit_counts_win(monkeypatch):
    monkeypatch.delenv("MOLDIFF_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert explicit_threads(0) is None and explicit_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert explicit_threads(0) == 2
    monkeypatch.setenv("MOLDIFF_THREADS", "1")
    assert explicit_threads(0) == 1 and explicit_threads(4) == 4
    monkeypatch.setenv("MOLDIFF_THREADS", "x")
    assert explicit_threads(0) == 2


def test_training_measures_threads_and_restores_the_count(tmp_path, restore_threads, monkeypatch):
    import moldiff

    monkeypatch.delenv("MOLDIFF_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    moldiff.train(toy_config(tmp_path, "train.steps=30"), progress=False)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # an explicit count: kept for the whole run, then restored

    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    moldiff.train(toy_config(tmp_path / "b", "train.steps=10"), progress=False)
    assert seen[0] == 1 and set(seen[:-1]) == {1} and torch.get_num_threads() == 2


def test_the_threads_option_of_the_cli(tmp_path, restore_threads, monkeypatch, capsys):
    from moldiff.cli import main

    monkeypatch.setenv("MOLDIFF_THREADS", "")  # recorded, so the option's value is undone after the test
    assert main(["train", "smoke/toy2d_vp", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["config", "show", "smoke/toy2d_vp"]) == 0  # config takes no --threads
    assert main(["train", "smoke/toy2d_vp", "--threads", "1", "--dry-run"]) == 0
    assert torch.get_num_threads() == 1
