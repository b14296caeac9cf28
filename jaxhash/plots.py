"""Pictures of search results, drawn with Pillow (no matplotlib needed). Drawing only: the images
and labels come from the caller (see :func:`jaxhash.data.source_entries`)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["GridCell", "draw_result_grid"]

CELL = 96
CAPTION = 26  # two lines of Pillow's default font
GREEN, RED, BLACK, GREY = (0, 140, 0), (200, 0, 0), (0, 0, 0), (150, 150, 150)


class GridCell(NamedTuple):
    """One picture of the grid: ``image`` ``(H, W, C)`` uint8 (None: drawn as missing), a first
    caption line, a second one (e.g. the class), and whether it is a correct result (True green,
    False red, None neutral)."""

    image: np.ndarray | None
    caption: str
    label: str | None = None
    correct: bool | None = None


def _to_pil(image: np.ndarray) -> Image.Image:
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return Image.fromarray(image).convert("RGB").resize((CELL, CELL), Image.NEAREST)


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, cell: GridCell, x: int, y: int, frame) -> None:
    if cell.image is not None:
        canvas.paste(_to_pil(cell.image), (x, y))
    else:
        draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], outline=GREY)
        draw.text((x + 4, y + CELL // 2), "missing", fill=GREY)
    colour = {True: GREEN, False: RED}.get(cell.correct, BLACK)
    if frame is not None or cell.correct is not None:
        draw.rectangle([x - 2, y - 2, x + CELL + 1, y + CELL + 1], outline=frame or colour, width=2)
    draw.text((x, y + CELL + 2), cell.caption[:16], fill=colour)
    if cell.label:
        draw.text((x, y + CELL + 13), str(cell.label)[:16], fill=colour)


def draw_result_grid(path, rows: Sequence[tuple[GridCell, Sequence[GridCell]]]) -> Path:
    """One row per query: the query (blue frame), then its results, each captioned.

    ``rows``: ``(query cell, result cells)`` pairs. Results known to be of the query's class are
    framed and captioned in green, others in red. Writes a PNG to ``path`` and returns it.
    """
    k = max((len(cells) for _, cells in rows), default=0)
    width, height = (k + 1) * (CELL + 6) + 12, len(rows) * (CELL + CAPTION + 10) + 6
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (query, cells) in enumerate(rows):
        y = row * (CELL + CAPTION + 10) + 6
        _draw_cell(canvas, draw, query, 6, y, frame=(30, 60, 220))
        for col, cell in enumerate(cells, 1):
            _draw_cell(canvas, draw, cell, col * (CELL + 6) + 12, y, frame=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
