"""Polygon checks and conversions shared by the layouts that store polygons (COCO, labelme).

Two coordinate conventions meet here: COCO's, in which pixel (x, y) is the unit square from (x, y) to (x + 1, y + 1),
and PIL's (which labelme draws with), in which integer coordinates are pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

from deeplab_core.data.layout import DatasetError

Point = tuple[float, float]
# Annotation tools put vertices on the image's border, a little outside it when a click lands there: up to a pixel
# outside is the border; further is a polygon that does not belong to this image.
BORDER_TOLERANCE = 1.0


def check_polygon(values: Sequence, width: int, height: int, where: str) -> None:
    """Refuse a COCO polygon (a flat ``[x0, y0, x1, y1, ...]`` list) that is not one, or that reaches outside its
    ``width`` x ``height`` image by more than ``BORDER_TOLERANCE``; ``where`` names the annotation."""
    if not isinstance(values, list) or len(values) < 6 or len(values) % 2:
        raise DatasetError(f"{where}: a polygon needs at least 3 (x, y) points as a flat list, got {values!r:.80}")
    check_points(list(zip(values[0::2], values[1::2])), width, height, where)


def check_points(points: Sequence[Sequence[float]], width: int, height: int, where: str) -> None:
    for point in points:
        if len(point) != 2 or not all(isinstance(v, (int, float)) for v in point):
            raise DatasetError(f"{where}: a point must be two numbers, got {point!r}")
        x, y = point
        if not (-BORDER_TOLERANCE <= x <= width + BORDER_TOLERANCE
                and -BORDER_TOLERANCE <= y <= height + BORDER_TOLERANCE):
            raise DatasetError(f"{where}: point ({x:g}, {y:g}) lies outside its {width} x {height} image")


def pil_to_corner_coordinates(kind: str, points: Sequence[Point]) -> list[Point]:
    """A shape drawn by PIL (``polygon`` vertices, or a ``rectangle``'s two corners) as a polygon in COCO's
    coordinates covering the same pixels: exactly for a rectangle (PIL truncates its corners to whole pixels and
    fills both ends), to within the boundary's pixels for a polygon (PIL's fill takes in the pixels its edges cross,
    half a pixel outward of their centres, which offsets the half pixel between the two conventions: measured, the
    vertices unchanged agree best)."""
    if kind == "rectangle":
        (x0, y0), (x1, y1) = points
        left, right = int(min(x0, x1)), int(max(x0, x1)) + 1
        top, bottom = int(min(y0, y1)), int(max(y0, y1)) + 1
        return [(left, top), (right, top), (right, bottom), (left, bottom)]
    return [(x, y) for x, y in points]


def clip_polygon(points: Sequence[Point], width: float, height: float, origin: float = 0.0) -> list[Point]:
    """``points`` clipped to the rectangle from (origin, origin) to (width + origin, height + origin)
    (Sutherland-Hodgman): what an annotation tool stores for a shape that runs off the image."""
    low_x = low_y = origin
    high_x, high_y = width + origin, height + origin
    edges = ((0, low_x, True), (0, high_x, False), (1, low_y, True), (1, high_y, False))
    result = list(points)
    for axis, bound, keep_above in edges:
        if not result:
            break
        inside = (lambda p: p[axis] >= bound) if keep_above else (lambda p: p[axis] <= bound)
        clipped: list[Point] = []
        for index, current in enumerate(result):
            previous = result[index - 1]
            if inside(current) != inside(previous):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = [previous[0] + t * (current[0] - previous[0]), previous[1] + t * (current[1] - previous[1])]
                crossing[axis] = bound
                clipped.append((crossing[0], crossing[1]))
            if inside(current):
                clipped.append(current)
        result = clipped
    return result
