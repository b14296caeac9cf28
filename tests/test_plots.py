import numpy as np
import pytest
from PIL import Image

from jaxhash.plots import CELL, GridCell, draw_result_grid, draw_scatter_panels


def test_a_result_grid_keeps_each_pictures_shape(tmp_path):
    wide = np.zeros((30, 300, 3), np.uint8)  # a 10:1 strip, black
    tiny = np.full((8, 8, 1), 128, np.uint8)  # grey, enlarged pixel by pixel
    path = draw_result_grid(tmp_path / "g.png", [(GridCell(wide, "query"), [GridCell(tiny, "#1", "a", True)])])
    with Image.open(path) as img:
        x, y = 6, 6
        assert img.getpixel((x + CELL // 2, y + CELL // 2)) == (0, 0, 0)  # the strip, centred
        assert img.getpixel((x + CELL // 2, y + 5)) == (255, 255, 255)  # white above it: not stretched to a square
        assert img.getpixel((CELL + 6 + 12 + CELL // 2, y + 5)) == (128, 128, 128)  # the 8x8 fills its cell


def test_scatter_panels_wrap_into_rows_and_name_the_classes_beside_them(tmp_path, rng):
    pytest.importorskip("matplotlib")
    points = rng.normal(size=(200, 2))
    labels = rng.integers(0, 3, 200)
    one_row = draw_scatter_panels(tmp_path / "a.png", [("a", points, labels)] * 3)
    two_rows = draw_scatter_panels(tmp_path / "b.png", [("b", points, labels)] * 4)  # three to a row, then one
    named = draw_scatter_panels(tmp_path / "c.png", [("c", points, labels)] * 3, class_names=["cat", "dog", "emu"])
    with Image.open(one_row) as a, Image.open(two_rows) as b, Image.open(named) as c:
        assert b.size[0] == pytest.approx(a.size[0], rel=0.05) and b.size[1] > 1.8 * a.size[1]
        assert c.size[0] > a.size[0] + 20 and c.size[1] == pytest.approx(a.size[1], rel=0.05)  # the legend is beside


def test_every_label_has_its_own_colour_past_twenty_and_unlabelled_points_are_grey(tmp_path, rng):
    pytest.importorskip("matplotlib")
    from jaxhash.plots import _label_colours

    for n in (3, 10, 20, 100):  # 100: CIFAR-100, or k-means into 100 clusters (labels past 19 shared one colour)
        assert len({tuple(c) for c in _label_colours(n)}) == n
    labels = np.repeat(np.arange(-1, 40), 5)
    path = draw_scatter_panels(tmp_path / "many.png", [("k = 40", rng.normal(size=(len(labels), 2)), labels)])
    assert path.stat().st_size > 5_000
