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

from PIL import Image, ImageDraw

from deeplab_core.io import exists, join_uri, read_text, write_bytes

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


def render_curves(rows: list[dict], width: int = 720, height: int = 300) -> bytes:
    """A PNG with two panels: training loss and validation mIoU against iterations."""
    picture = Image.new("RGB", (width, 2 * height), "white")
    draw = ImageDraw.Draw(picture)
    iterations = [row["iteration"] for row in rows] or [0]
    x_low, x_high = min(iterations), max(max(iterations), min(iterations) + 1)  # one axis for both panels
    for panel, (key, title, colour) in enumerate((("loss", "training loss", (200, 60, 40)),
                                                  ("val_miou", "validation mIoU", (40, 90, 200)))):
        points = [(row["iteration"], row[key]) for row in rows
                  if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
        top = panel * height
        left, right, upper, lower = 60, width - 20, top + 30, top + height - 40
        draw.rectangle([left, upper, right, lower], outline="black")
        draw.text((left, top + 10), title, fill="black")
        if not points:
            draw.text((left + 10, upper + 10), "no values yet", fill="gray")
            continue
        ys = [y for _, y in points]
        y_low, y_high = min(ys), max(ys)
        if y_high - y_low < 1e-9:
            y_low, y_high = y_low - 0.5, y_high + 0.5
        draw.text((4, upper - 6), f"{y_high:.3g}", fill="black")
        draw.text((4, lower - 6), f"{y_low:.3g}", fill="black")
        draw.text((left, lower + 8), f"iteration {x_low}", fill="black")
        draw.text((right - 110, lower + 8), f"iteration {x_high}", fill="black")
        scaled = [(left + (x - x_low) / (x_high - x_low) * (right - left),
                   lower - (y - y_low) / (y_high - y_low) * (lower - upper)) for x, y in points]
        if len(scaled) > 1:
            draw.line(scaled, fill=colour, width=2)
        for x, y in scaled:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
