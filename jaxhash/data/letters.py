"""The 33 Russian capital letters as 15x15 binary images (the prototypes of Chervyakov & Balan's two-stage Hamming network).

Rendered once by ``scripts/render_letters.py`` from DejaVu Sans Condensed Bold (Debian package
fonts-dejavu-extra) and kept in the
package as text, so nothing here needs a font.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

LETTERS = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"


def load_cyrillic_letters() -> tuple[tuple[str, ...], np.ndarray]:
    """``(names, images)``: 33 letters and a ``(33, 15, 15)`` uint8 array, 1 = black."""
    text = resources.files("jaxhash.data").joinpath("cyrillic_15x15.txt").read_text(encoding="utf-8")
    names, images, rows = [], [], []
    for line in text.splitlines():
        if line.startswith("letter "):
            names.append(line.split(" ", 1)[1])
            rows = []
            images.append(rows)
        elif line and not line.startswith("# ") and names:  # pixel rows never contain spaces
            rows.append([c == "#" for c in line])
    return tuple(names), np.asarray(images, np.uint8)


def add_flip_noise(rng: np.random.Generator, images, p: float) -> np.ndarray:
    """Flip every pixel independently with probability ``p`` (the paper's noisy letters)."""
    images = np.asarray(images, np.uint8)
    return images ^ (rng.random(images.shape) < p).astype(np.uint8)
