"""Pictures of search results, drawn with Pillow (no matplotlib needed)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CELL = 96
CAPTION = 14


def _to_pil(image: np.ndarray) -> Image.Image:
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return Image.fromarray(image).convert("RGB").resize((CELL, CELL), Image.NEAREST)


def load_result_images(metadata: dict, ids, shape) -> list[np.ndarray | None]:
    """Images of index entries ``ids`` from the index metadata (folder, archive or data set)."""
    from .data.folders import decode_image, is_archive  # noqa: PLC0415

    paths = metadata.get("paths")
    out: list[np.ndarray | None] = [None] * len(ids)
    if paths is not None and metadata.get("root"):
        root = Path(metadata["root"])
        wanted = {paths[i]: n for n, i in enumerate(ids) if 0 <= i < len(paths)}
        if is_archive(root):
            with tarfile.open(root) as tar:
                for member in tar:
                    name = member.name.lstrip("./")
                    if name in wanted:
                        out[wanted[name]] = decode_image(tar.extractfile(member).read(), shape[:2], shape[2])
        else:
            for name, n in wanted.items():
                try:
                    out[n] = decode_image((root / name).read_bytes(), shape[:2], shape[2])
                except OSError:
                    pass
        return out
    if metadata.get("data"):
        from .data import load_dataset, retrieval_split  # noqa: PLC0415

        split = retrieval_split(load_dataset(metadata["data"], metadata.get("data_dir"), progress=False),
                                metadata.get("protocol", "1k"), metadata.get("seed", 0))
        return [split.db_x[i] if 0 <= i < len(split.db_x) else None for i in ids]
    return out


def draw_result_grid(path, queries, query_names, results, metadata: dict, shape) -> Path:
    """One row per query: the query, then its results captioned with rank and Hamming distance."""
    k = max((len(r["results"]) for r in results), default=0)
    width, height = (k + 1) * (CELL + 4) + 8, len(queries) * (CELL + CAPTION + 8) + 4
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (query, name, res) in enumerate(zip(queries, query_names, results)):
        y = row * (CELL + CAPTION + 8) + 4
        canvas.paste(_to_pil(query), (4, y))
        draw.rectangle([3, y - 1, 4 + CELL, y + CELL], outline=(220, 30, 30), width=2)
        draw.text((4, y + CELL + 1), Path(name).name[:14], fill=(0, 0, 0))
        ids = [h["id"] for h in res["results"]]
        for col, (hit, image) in enumerate(zip(res["results"], load_result_images(metadata, ids, shape)), 1):
            x = col * (CELL + 4) + 8
            if image is not None:
                canvas.paste(_to_pil(image), (x, y))
            else:
                draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], outline=(150, 150, 150))
                draw.text((x + 4, y + CELL // 2), "missing", fill=(150, 150, 150))
            draw.text((x, y + CELL + 1), f"#{hit['rank']} d={hit['distance']}", fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
