"""How many CPUs the CRF stage needs: the line `segment` and `evaluate --crf` end with.

The CRF runs on CPUs at a cost per image that depends on the model's outputs (how many labels it keeps, see
``deeplab_core.crf.select_labels``) and on the photos; the model stage's rate sets how many images a second it must
keep up with. Both are measured on the run's own data, so the line answers "how big a CPU pool for this model and
these images".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The CRF stage's measured scaling efficiency on busy machines (docs/benchmarks.md, sizing the CRF stage): N CPUs
# refine ~0.85 x N times what one does.
CRF_SCALING_EFFICIENCY = 0.85


def crf_sizing_line(crf_seconds: Sequence[float], crf_labels: Sequence[int], model_seconds: Sequence[float],
                    model_actors: int) -> str:
    """One line: the CRF's CPU-seconds per image (median, 95th percentile), the labels kept, the model stage's
    images/s (``model_actors`` actors at their measured seconds per image) and the CPUs for CRF tasks that keep
    the model stage busy. Empty when no image went through the CRF."""
    if not crf_seconds:
        return ""
    seconds = np.asarray(crf_seconds, dtype=np.float64)
    labels = np.asarray(crf_labels)
    median, p95 = np.percentile(seconds, [50, 95])
    model_rate = model_actors / max(float(np.mean(model_seconds)), 1e-9) if len(model_seconds) else 0.0
    cpus = math.ceil(model_rate * float(seconds.mean()) / CRF_SCALING_EFFICIENCY)
    return (f"CRF sizing: {median:.3f} CPU-s/image median, {p95:.3f} 95th percentile, {labels.min()}-{labels.max()} "
            f"labels kept (median {np.median(labels):g}); the model stage ran at {model_rate:.1f} images/s on "
            f"{model_actors} actor{'s' if model_actors != 1 else ''}: {cpus} CPUs for CRF tasks keep it busy on "
            f"this data (at {CRF_SCALING_EFFICIENCY} scaling efficiency; pass --crf-cpus / size the CPU pool)")
