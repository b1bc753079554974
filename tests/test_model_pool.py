"""The model actor pool's size: fixed or MIN-MAX, and its default from the GPUs the cluster can reach."""

import argparse

import pytest

from pipelines.common.ranges import CountRange, count_range
from pipelines.segmentation import model_pool
from pipelines.segmentation.model_pool import ModelResources, PoolPlan, model_stage_resources, plan_pool


@pytest.mark.parametrize("text, expected", [("3", CountRange(3, 3)), ("1-4", CountRange(1, 4)), (" 2-2", CountRange(2, 2))])
def test_counts_read_as_fixed_or_ranges(text, expected):
    assert count_range(text) == expected
    assert str(expected) == text.strip().split("-")[0] if expected.fixed else str(expected) == text


@pytest.mark.parametrize("text", ["0", "4-2", "a", "1-", "-3", "2-x"])
def test_bad_counts_are_refused_naming_the_text(text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace("-", r"\-") + "|whole numbers|MIN"):
        count_range(text)


@pytest.mark.parametrize("reachable, given, expected", [
    ({"CPU": 8, "GPU": 4}, None, PoolPlan(CountRange(1, 4), True)),  # default: one per reachable GPU
    ({"CPU": 8}, None, PoolPlan(CountRange(1, 1), False)),  # no GPU: one CPU actor
    ({"CPU": 8}, CountRange(2, 3), PoolPlan(CountRange(2, 3), False)),
    ({"CPU": 8, "GPU": 8}, CountRange(2, 2), PoolPlan(CountRange(2, 2), True)),
])
def test_the_pool_plan_follows_the_reachable_gpus(monkeypatch, reachable, given, expected):
    monkeypatch.setattr(model_pool, "reachable_resources", lambda: reachable)
    assert plan_pool(ModelResources(model_actors=given)) == expected


def test_half_a_gpu_per_actor_doubles_the_default_maximum(monkeypatch):
    monkeypatch.setattr(model_pool, "reachable_resources", lambda: {"GPU": 3})
    assert plan_pool(ModelResources(gpus_per_actor=0.5)).actors == CountRange(1, 6)


def test_a_range_becomes_an_autoscaling_actor_pool_and_a_count_a_fixed_one():
    resources = ModelResources(cpus_per_actor=2)
    growing = model_stage_resources(PoolPlan(CountRange(1, 4), True), resources)
    assert (growing["compute"].min_size, growing["compute"].max_size) == (1, 4)
    assert growing["num_gpus"] == 1.0 and growing["num_cpus"] == 2
    fixed = model_stage_resources(PoolPlan(CountRange(3, 3), False), resources)
    assert (fixed["compute"].min_size, fixed["compute"].max_size) == (3, 3) and "num_gpus" not in fixed
