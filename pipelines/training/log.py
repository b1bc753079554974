"""What a training run records under ``--output`` for people to read: ``metrics.csv``, TensorBoard event files in
``tensorboard/`` and ``curves.png`` (loss and validation mIoU over iterations), rewritten at every validation, so an
interrupted run leaves what it had measured.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

from deeplab_core.io import exists, join_uri, read_text, write_bytes
from pipelines.common.charts import render_curves

CSV_FILE, CURVES_FILE, TENSORBOARD_DIR = "metrics.csv", "curves.png", "tensorboard"
EVENTS_FILE = "events.out.tfevents.0.deeplab-ray"
COLUMNS = ("iteration", "loss", "lr", "images_per_second", "val_miou", "val_pixel_accuracy")


class TrainingLog:
    """Rows of metrics, one per logged iteration; ``write`` renders every file from all rows so far."""

    def __init__(self, output: str, class_names: list[str], rows: list[dict] | None = None) -> None:
        self.output, self.class_names = output, class_names
        self.rows: list[dict] = list(rows or [])

    @classmethod
    def resume(cls, output: str, class_names: list[str], up_to_iteration: int) -> TrainingLog:
        """The log of a resumed run: the rows it had written, up to the checkpoint it resumes from."""
        uri = join_uri(output, CSV_FILE)
        if not exists(uri):
            return cls(output, class_names)
        rows = [{key: _number(value) for key, value in row.items() if value != ""}
                for row in csv.DictReader(io.StringIO(read_text(uri)))]
        return cls(output, class_names, [row for row in rows if row.get("iteration", 0) <= up_to_iteration])

    def add(self, row: dict) -> None:
        """Add a row, or merge it into the last one when it is for the same iteration (validation after loss)."""
        if self.rows and self.rows[-1]["iteration"] == row["iteration"]:
            self.rows[-1].update(row)
        else:
            self.rows.append(dict(row))

    def write(self) -> None:
        write_bytes(join_uri(self.output, CSV_FILE), self._csv())
        write_bytes(join_uri(self.output, CURVES_FILE), render_curves(self.rows))
        for name, data in self._tensorboard().items():
            write_bytes(join_uri(self.output, TENSORBOARD_DIR, name), data)

    def _columns(self) -> list[str]:
        per_class = [f"val_iou/{name}" for name in self.class_names]
        return list(COLUMNS) + [column for column in per_class if any(column in row for row in self.rows)]

    def _csv(self) -> bytes:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue().encode()

    def _tensorboard(self) -> dict[str, bytes]:
        """One event file holding every row (written locally by tensorboardX, then copied to the output URI)."""
        from tensorboardX import SummaryWriter

        with tempfile.TemporaryDirectory() as folder:
            writer = SummaryWriter(folder, filename_suffix=".deeplab")
            for row in self.rows:
                for key, value in row.items():
                    if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                        writer.add_scalar(key, value, row["iteration"])
            writer.close()
            (events,) = [path for path in Path(folder).iterdir() if path.is_file()]
            # A fixed name: each write replaces the file instead of adding one more that repeats the same points.
            return {EVENTS_FILE: events.read_bytes()}


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
