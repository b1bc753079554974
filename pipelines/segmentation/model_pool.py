"""The model stage's actor pool: what it asks of the cluster (``ModelResources``, flags of segment, evaluate and
tune_crf) and how far it grows (``plan_pool``).

A pool of ``MIN-MAX`` actors starts with MIN and grows while images are queued and the cluster has (or its autoscaler
can add) a GPU, or CPUs without GPUs, for one more, up to MAX; Ray Data asks the autoscaler for what it lacks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pipelines.common.ranges import CountRange

# Several batches queued per actor: the next is decoded and copied while the current one runs.
BATCHES_IN_FLIGHT_PER_ACTOR = 4


@dataclass(frozen=True)
class ModelResources:
    """What the model and CRF stages ask of the cluster. Each field is a flag of segment, evaluate and tune_crf."""

    model_actors: CountRange | None = field(default=None, metadata={
        "help": "model replicas (actors): N, or MIN-MAX for a pool that starts with MIN and grows to MAX as GPUs "
                "(CPUs, without GPUs) appear; default: 1 growing to one per GPU the cluster can reach (its "
                "autoscaler's maximum included), or 1 on a cluster without GPUs"})
    gpus_per_actor: float = field(default=1.0, metadata={"help": "GPUs per model actor when the cluster has GPUs"})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs per model actor"})
    crf_cpus: float = field(default=1.0, metadata={"help": "CPUs per CRF task"})


@dataclass(frozen=True)
class PoolPlan:
    """How many model actors the pool starts with and may grow to, and whether they hold GPUs."""

    actors: CountRange
    use_gpus: bool

    def __str__(self) -> str:
        kind = "GPU" if self.use_gpus else "CPU"
        return f"{self.actors} {kind} actor{'s' if self.actors.maximum != 1 else ''}"


def reachable_resources() -> dict[str, float]:
    """The cluster's resources now, or what its autoscaler may grow it to where that is more (node types' counts
    times their resources, as Ray Train checks its workers against)."""
    import ray

    now = dict(ray.cluster_resources())
    try:
        from ray._private import state  # Ray's own libraries read the autoscaler's maximum here; no public API

        maximum = state.state.get_max_resources_from_cluster_config() or {}
    except Exception:  # noqa: BLE001 - no autoscaler config (a fixed cluster) or an older Ray: what is there now
        maximum = {}
    return {name: max(now.get(name, 0), min(maximum.get(name, 0), sys.maxsize)) for name in {*now, *maximum}}


def plan_pool(resources: ModelResources) -> PoolPlan:
    """The pool for ``resources`` on the connected cluster: ``model_actors`` where given, else one growing to one per
    GPU the cluster can reach, or 1 without GPUs."""
    gpus = reachable_resources().get("GPU", 0)
    use_gpus = gpus > 0 and resources.gpus_per_actor > 0
    if resources.model_actors is not None:
        return PoolPlan(resources.model_actors, use_gpus)
    if use_gpus:
        return PoolPlan(CountRange(1, max(1, int(gpus // resources.gpus_per_actor))), True)
    return PoolPlan(CountRange(1, 1), False)


def model_stage_resources(plan: PoolPlan, resources: ModelResources) -> dict:
    """``map_batches`` resources for the model actors of ``plan``: GPU actors when the cluster has GPUs, else CPU ones.

    With CPU actors whose resources equal the decode tasks', Ray Data fuses decoding into the actors (one transfer
    fewer); with GPUs it cannot, and decoding stays in CPU tasks off the GPU actors.
    """
    from ray.data import ActorPoolStrategy

    compute = {"num_cpus": resources.cpus_per_actor}
    if plan.use_gpus:
        compute["num_gpus"] = resources.gpus_per_actor
    low, high = plan.actors.minimum, plan.actors.maximum
    pool = (ActorPoolStrategy(size=low, max_tasks_in_flight_per_actor=BATCHES_IN_FLIGHT_PER_ACTOR) if low == high else
            ActorPoolStrategy(min_size=low, max_size=high, max_tasks_in_flight_per_actor=BATCHES_IN_FLIGHT_PER_ACTOR))
    return {"compute": pool, **compute}
