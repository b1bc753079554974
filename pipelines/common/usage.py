"""What a run used of the cluster, sampled while it runs: nodes, CPUs in use, actors of one kind.

An autoscaling cluster changes size during a run; the end-of-run summary and the CRF sizing line report what the
run really had (peak actors, peak CPUs), and the elasticity benchmark its node-seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Usage:
    peak_nodes: int = 0
    peak_cpus: float = 0.0  # CPUs in use at once (the cluster's total less what was free), at their peak
    peak_actors: int = 0  # alive actors whose class name holds ``actor_name``
    node_seconds: float = 0.0
    seconds: float = 0.0

    def describe(self, actors: str = "model actors") -> str:
        return (f"peak {self.peak_actors} {actors}, {self.peak_cpus:g} CPUs in use and {self.peak_nodes} "
                f"node{'s' if self.peak_nodes != 1 else ''}; {self.node_seconds:.0f} node-seconds")


class UsageSampler:
    """``with UsageSampler("Predictor") as sampler: ...`` samples the connected cluster every ``interval`` seconds
    in a thread; ``sampler.usage`` holds the peaks (after the block, the whole run's; peak actors at least
    ``at_least_actors``)."""

    def __init__(self, actor_name: str | None = None, interval: float = 0.5, at_least_actors: int = 0) -> None:
        self.actor_name, self.interval = actor_name, interval
        # A pool's minimum runs before any row does: a run shorter than a sample's interval still had it.
        self.usage = Usage(peak_actors=at_least_actors)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)

    def __enter__(self) -> UsageSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        started = last = time.monotonic()
        while True:
            self.sample(time.monotonic() - last)
            last = time.monotonic()
            self.usage.seconds = last - started
            if self._stop.wait(self.interval):
                break

    def sample(self, elapsed: float) -> None:
        import ray

        try:
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
            cpus = ray.cluster_resources().get("CPU", 0) - ray.available_resources().get("CPU", 0)
            actors = self._alive_actors() if self.actor_name else 0
        except Exception:  # noqa: BLE001 - a sample lost to a cluster in flux is skipped; the run goes on
            return
        usage = self.usage
        usage.peak_nodes = max(usage.peak_nodes, nodes)
        usage.peak_cpus = max(usage.peak_cpus, cpus)
        usage.peak_actors = max(usage.peak_actors, actors)
        usage.node_seconds += nodes * elapsed

    def _alive_actors(self) -> int:
        # The GCS's actor table, read directly: Ray's state API (ray.util.state) needs the dashboard, which a
        # driver's own Ray may run without.
        from ray._private import state

        return sum(1 for actor in state.actors().values()
                   if actor.get("State") == "ALIVE" and self.actor_name in str(actor.get("ActorClassName")))
