#!/usr/bin/env python
"""Render the 33 Russian capital letters as 15x15 binary images into jaxhash/data/cyrillic_15x15.txt.

Run once (the result is kept in the repository, so tests and users need no font):

    sudo apt-get install -y fonts-dejavu-extra   # DejaVu Sans Condensed; fonts-dejavu-core has DejaVuSans-Bold.ttf
    python scripts/render_letters.py [--font /usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf]

All glyphs share one scale and baseline (the union of their boxes, diacritics and descenders
included, fills the 15 rows); a glyph wider than 15 cells is squeezed horizontally to fit; each is
centred, drawn at 4x and area-averaged down; a cell is black when at least 40% inked.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
SIZE, SCALE = 15, 4
OUT = Path(__file__).resolve().parents[1] / "jaxhash" / "data" / "cyrillic_15x15.txt"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--font", default="/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf")
    args = parser.parse_args()
    probe = ImageFont.truetype(args.font, 100)
    boxes = [probe.getbbox(ch) for ch in LETTERS]
    height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
    font = ImageFont.truetype(args.font, int(100 * SIZE * SCALE / height))
    boxes = [font.getbbox(ch) for ch in LETTERS]
    top = min(b[1] for b in boxes)
    full = SIZE * SCALE
    lines = [f"# {len(LETTERS)} Russian capital letters, {SIZE}x{SIZE}, '#' = black; rendered by scripts/render_letters.py from {Path(args.font).name}"]
    for ch, (x0, _, x1, _) in zip(LETTERS, boxes):
        glyph = Image.new("L", (x1 - x0, full), 0)
        ImageDraw.Draw(glyph).text((-x0, -top), ch, font=font, fill=255)
        if glyph.width > full:
            glyph = glyph.resize((full, full), Image.BOX)
        canvas = Image.new("L", (full, full), 0)
        canvas.paste(glyph, ((full - glyph.width) // 2, 0))
        ink = np.asarray(canvas, np.float32).reshape(SIZE, SCALE, SIZE, SCALE).mean(axis=(1, 3)) / 255.0
        cells = ink >= 0.4
        lines.append(f"letter {ch}")
        lines += ["".join("#" if c else "." for c in row) for row in cells]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
