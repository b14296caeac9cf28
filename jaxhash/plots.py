"""Pictures of search results, drawn with Pillow, and scatter plots of embeddings (matplotlib,
imported when used). Drawing only: the images and labels come from the caller (see
:func:`jaxhash.data.source_entries`)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

__all__ = ["GridCell", "draw_result_grid", "draw_scatter_panels", "fit_to_cell"]

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


def _picture(image: np.ndarray, size: int) -> Image.Image:
    """``image`` as an RGB picture fitted in ``size`` x ``size``, its shape kept: shrunk with a Lanczos
    filter, enlarged pixel by pixel (small images stay sharp)."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    picture = Image.fromarray(image).convert("RGB")
    return ImageOps.contain(picture, (size, size), Image.LANCZOS if max(picture.size) > size else Image.NEAREST)


def fit_to_cell(image: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8: ``image`` shrunk to fit a grid cell, or as it is when it fits (a query
    photo is kept this small until the grid is drawn)."""
    image = np.asarray(image, np.uint8)
    return np.asarray(_picture(image, CELL)) if max(image.shape[:2]) > CELL else image


def _to_pil(image: np.ndarray) -> Image.Image:
    """A ``CELL`` x ``CELL`` picture of ``image``, its shape kept (white margins)."""
    picture = _picture(image, CELL)
    cell = Image.new("RGB", (CELL, CELL), "white")
    cell.paste(picture, ((CELL - picture.width) // 2, (CELL - picture.height) // 2))
    return cell


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


_NO_LABEL = (0.75, 0.75, 0.75, 1.0)  # label -1: an unlabelled image


def _label_colours(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA, one distinct colour per label: matplotlib's tab10 or tab20 up to 20 labels, past
    that ``n`` colours spread along its turbo map."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if n <= 20:
        listed = np.asarray(plt.get_cmap("tab10" if n <= 10 else "tab20").colors)[: max(n, 1)]  # RGB
        return np.concatenate([listed, np.ones((len(listed), 1))], axis=1)
    return plt.get_cmap("turbo")(np.linspace(0.0, 1.0, n))


def draw_scatter_panels(path, panels: Sequence[tuple[str, np.ndarray, np.ndarray]], class_names=None,
                        point_size: float | None = None, columns: int = 3) -> Path:
    """2-D scatter plots side by side, ``columns`` to a row, as one PNG (matplotlib, the ``plots`` extra).

    ``panels``: ``(title, points (n, 2) float, colours (n,) int labels)`` each, e.g. PCA and t-SNE
    of a latent space coloured by true class, or by cluster. Label ``i`` has the same colour in
    every panel; with ``class_names`` (up to 20) a legend beside the panels names them. Points are
    larger when there are fewer of them (``point_size`` fixes it).
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.lines import Line2D  # noqa: PLC0415
    except ImportError:
        raise ImportError("scatter plots need matplotlib: pip install 'jaxhash[plots]'") from None
    n_colours = max([int(np.max(np.asarray(c), initial=0)) + 1 for _, _, c in panels] + [len(class_names or ())])
    palette = _label_colours(n_colours)
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, points, colours) in zip(axes.flat, panels):
        points = np.asarray(points)
        size = point_size or float(np.clip(3000 / max(len(points), 1), 2.0, 24.0))
        colours = np.asarray(colours, np.int64)
        rgba = np.where((colours >= 0)[:, None], palette[np.clip(colours, 0, None)], _NO_LABEL)
        ax.scatter(points[:, 0], points[:, 1], c=rgba, s=size, linewidths=0, rasterized=True)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if class_names is not None and len(class_names) <= 20:
        handles = [Line2D([], [], marker="o", linestyle="", color=palette[i], markersize=6) for i in range(len(class_names))]
        fig.legend(handles, [str(c) for c in class_names], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
