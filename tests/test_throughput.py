"""The training loop's images/s: validation and checkpoint time is not training time."""

from pipelines.training import loop as train_loop
from pipelines.training.loop import Throughput


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_steady_rate_leaves_out_warmup_and_paused_time(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(train_loop.time, "monotonic", clock)
    throughput = Throughput(images_per_step=10, first_iteration=0, warmup=2, started=clock.now)
    for iteration in range(1, 11):
        clock.now += 5.0 if iteration <= 2 else 1.0  # warm-up steps are slow
        throughput.stepped(iteration)
        if iteration in (5, 10):
            with throughput.paused():
                clock.now += 30.0  # validation and a checkpoint
    assert throughput.steady(10) == 10.0  # 8 steps of 10 images in 8 s of training
    assert throughput.stepped(10) == 100 / 18.0  # all 10 steps over 10 + 8 s of training
