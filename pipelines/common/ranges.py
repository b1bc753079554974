"""``N`` or ``MIN-MAX``: how many training workers (``--workers``) or model actors (``--model-actors``) a run uses,
fixed or growing with the cluster."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class CountRange:
    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"expected 1 <= MIN <= MAX, got {self.minimum}-{self.maximum}")

    @property
    def fixed(self) -> bool:
        return self.minimum == self.maximum

    def __str__(self) -> str:
        return str(self.minimum) if self.fixed else f"{self.minimum}-{self.maximum}"


def count_range(text: str) -> CountRange:
    """An argparse ``type``: ``N`` (a fixed count) or ``MIN-MAX`` (growing from MIN to MAX), whole numbers >= 1."""
    low, dash, high = text.strip().partition("-")
    try:
        minimum = int(low)
        maximum = int(high) if dash else minimum
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX (whole numbers), got {text!r}") from None
    try:
        return CountRange(minimum, maximum)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
