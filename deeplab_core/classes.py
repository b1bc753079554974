"""A dataset's classes: their names and colours, in class-id order, and the ``classes.txt`` file that may give them.

``classes.txt`` holds one class a line, line i naming class i; a line may end with the class's colour as three
numbers 0-255 (``road 128 64 128``). Classes without a given colour take the VOC colour map's (PASCAL VOC's own
colours for its 21 classes; distinct colours for up to 255 classes elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplab_core.io import VOC_COLORMAP, exists, join_uri, read_text
from deeplab_core.labels import IGNORE_INDEX

CLASS_NAMES_FILE = "classes.txt"

Colour = tuple[int, int, int]


def default_colours(count: int) -> tuple[Colour, ...]:
    """The colours of classes that name none: the VOC colour map's first ``count`` entries."""
    return tuple(tuple(int(v) for v in VOC_COLORMAP[index]) for index in range(count))


@dataclass(frozen=True)
class ClassList:
    """Class names and colours in class-id order (``colours`` defaults to ``default_colours``)."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        colours = tuple(tuple(int(v) for v in colour) for colour in self.colours) or default_colours(len(self.names))
        object.__setattr__(self, "colours", colours)
        if not 1 <= len(self.names) <= IGNORE_INDEX:
            raise ValueError(f"a dataset has 1..{IGNORE_INDEX} classes, got {len(self.names)}")
        if len(colours) != len(self.names) or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
            raise ValueError(f"{len(self.names)} classes need as many RGB colours of 0..255")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def numbered(cls, count: int) -> ClassList:
        """Classes named by their ids, for a dataset that names none."""
        return cls(tuple(str(index) for index in range(count)))


def parse_class_file(text: str, uri: str = CLASS_NAMES_FILE) -> ClassList:
    """``classes.txt``'s classes: a name a line, optionally followed by ``r g b``; blank lines are skipped."""
    names: list[str] = []
    colours: list[Colour | None] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        tail = words[-3:]
        if len(words) >= 4 and all(word.isdigit() for word in tail):
            if not all(0 <= int(word) <= 255 for word in tail):
                raise ValueError(f"{uri}, line {number}: a colour's values are 0..255, got {' '.join(tail)}")
            names.append(" ".join(words[:-3]))
            colours.append(tuple(int(word) for word in tail))
        else:
            names.append(" ".join(words))
            colours.append(None)
    if not names:
        raise ValueError(f"{uri} names no class")
    defaults = default_colours(len(names))
    return ClassList(tuple(names), tuple(c if c is not None else defaults[i] for i, c in enumerate(colours)))


def read_class_file(root: str) -> ClassList | None:
    """``<root>/classes.txt``'s classes, or None when the dataset has no such file."""
    uri = join_uri(root, CLASS_NAMES_FILE)
    if not exists(uri):
        return None
    return parse_class_file(read_text(uri), uri)


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 table sending each stored mask value to its class id; values not in ``mapping`` become
    the ignore label (255)."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for stored, class_id in mapping.items():
        if 0 <= stored <= 255:
            table[stored] = class_id
    return table
