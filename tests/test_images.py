import io
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxhash.images import alpha_note, as_image_batch, common_shape, conform_images, conversion_note, decode_image, to_features


def encoded(array, fmt="PNG", mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


def test_decode_keeps_grey_grey_and_drops_alpha(rng):
    grey = rng.integers(0, 256, (5, 7)).astype(np.uint8)
    assert decode_image(encoded(grey)).shape == (5, 7, 1)
    rgba = rng.integers(0, 256, (5, 7, 4)).astype(np.uint8)
    rgb = decode_image(encoded(rgba))
    np.testing.assert_array_equal(rgb, rgba[..., :3])
    assert decode_image(encoded(grey), image_size=(10, 3), channels=3).shape == (10, 3, 3)
    with pytest.raises(OSError):
        decode_image(b"not an image")


def test_decode_counts_the_images_whose_transparency_it_drops(rng):
    rgb = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    see_through = np.dstack([rgb, np.full((5, 7), 255, np.uint8)])
    see_through[0, 0, 3] = 0
    opaque = np.dstack([rgb, np.full((5, 7), 255, np.uint8)])
    grey_alpha = np.dstack([rgb[..., 0], np.full((5, 7), 128, np.uint8)])
    palette = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG", transparency=0)
    counts = {}
    for data in (encoded(see_through), encoded(grey_alpha), buf.getvalue()):
        decode_image(data, counts=counts)
    assert counts == {"alpha": 3}
    for data in (encoded(opaque), encoded(rgb), encoded(rgb, fmt="JPEG")):  # nothing seen through: nothing to say
        np.testing.assert_array_equal(decode_image(data, counts=counts).shape, (5, 7, 3))
    assert counts == {"alpha": 3}
    assert decode_image(encoded(grey_alpha), counts=counts).shape == (5, 7, 1)
    assert alpha_note(counts["alpha"], "photos").startswith("photos: dropped the transparency (alpha channel) of 4 images")
    assert alpha_note(0, "photos") is None


def test_conform_converts_channels_and_sizes_with_one_note(rng):
    mixed = [rng.integers(0, 256, (8, 8, 3)).astype(np.uint8), rng.integers(0, 256, (8, 8)).astype(np.uint8),
             rng.integers(0, 256, (16, 12, 4)).astype(np.uint8)]
    with pytest.warns(UserWarning, match=r"3 images: converted 2 to RGB and resized 1 to 8x8 for") as caught:
        out = conform_images(mixed, (8, 8, 3))
    assert len(caught) == 1 and out.shape == (3, 8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], mixed[0])
    np.testing.assert_array_equal(out[1], np.repeat(mixed[1][..., None], 3, axis=2))  # grey broadcast to 3 channels


def test_conform_to_grey_uses_luma_like_pillow(rng):
    rgb = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    with pytest.warns(UserWarning, match="converted 1 to grey"):
        ours = conform_images([rgb], (6, 6, 1))[0, ..., 0]
    pillow = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.abs(ours.astype(int) - pillow).max() <= 1


def test_conform_is_a_no_op_on_the_right_shape_and_counts_silently(rng):
    batch = rng.integers(0, 256, (4, 5, 5, 1)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conform_images(batch, (5, 5, 1)) is batch
        counts = {}
        conform_images(batch[..., 0].repeat(2, axis=1), (5, 5, 1), counts)  # (4, 10, 5) grey
    assert counts == {"images": 4, "converted": 0, "resized": 4}
    assert conversion_note(counts, (5, 5, 1)) == "4 images: resized 4 to 5x5 for the model's input shape (5, 5, 1)"
    assert conversion_note({"images": 4}, (5, 5, 1)) is None


def test_bad_images_are_refused_clearly():
    with pytest.raises(TypeError, match="uint8"):
        conform_images([np.zeros((4, 4, 3), np.float32)], (4, 4, 3))
    with pytest.raises(ValueError, match="C in 1..4"):
        conform_images([np.zeros((4, 4, 5), np.uint8)], (4, 4, 3))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        conform_images([np.zeros((4, 4, 3), np.uint8)], (4, 4, 2))


def test_features_and_batch_detection():
    x = np.full((2, 3, 3, 1), 255, np.uint8)
    f = to_features(x)
    assert f.shape == (2, 9) and f.dtype == np.float32 and f.max() == 1.0
    assert as_image_batch(x) is x or as_image_batch(x).shape == x.shape
    assert as_image_batch([x[0]]) is not None and as_image_batch(f) is None and as_image_batch([[1.0, 2.0]]) is None
    assert as_image_batch(np.zeros((5, 8, 9), np.uint8)).shape == (5, 8, 9, 1)  # (n, H, W) grey
    with pytest.raises(ValueError, match="looks like one"):
        as_image_batch(np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="looks like one"):
        as_image_batch(np.zeros((8, 9, 1), np.uint8), model_shape=(8, 9, 1))


def test_colour_made_grey_here_equals_pillows_convert_to_the_last_level(rng):
    colour = rng.integers(0, 256, (300, 400, 3)).astype(np.uint8)
    with pytest.warns(UserWarning, match="converted 1 to grey"):
        ours = conform_images(colour[None], (300, 400, 1))[0, ..., 0]
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(colour).convert("L")))  # a float luma: 68 levels off


def test_common_shape_takes_the_majority_channels_and_refuses_mixed_sizes():
    assert common_shape([np.zeros((4, 5, 3)), np.zeros((4, 5, 4))], "x") == (4, 5, 3)
    with pytest.warns(UserWarning, match=r"x: converted 1 colour image to grey \(2 of 3 images are grey\)"):
        assert common_shape([np.zeros((4, 5)), np.zeros((4, 5, 2)), np.zeros((4, 5, 3))], "x") == (4, 5, 1)
    with pytest.raises(ValueError, match=r"x have different sizes: 4x5 \(2 images\), 6x6 \(1 image\)"):
        common_shape([np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((6, 6))], "x")


def test_common_shape_can_take_the_most_common_size_with_a_note():
    images = [np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((6, 6))]
    with pytest.warns(UserWarning, match="2 different sizes: all are resized to the most common, 4x5 \\(2 of 3 images\\)"):
        assert common_shape(images, "x", mixed_sizes="most common") == (4, 5, 1)
    with pytest.raises(ValueError, match="mixed_sizes must be"):
        common_shape(images, "x", mixed_sizes="largest")


@pytest.mark.parametrize("values, hint", [
    (np.arange(17.0), r"the values are 0\.\.16: x\.round\(\)\.astype\(np\.uint8\) keeps them .* \(x \* \(255 / 16\)\)"),
    (np.linspace(0, 1, 5), r"the values are in 0\.\.1: convert with \(x \* 255\)"),
    (np.array([-3.0, 300.0]), r"the values are -3\.\.300, outside 0\.\.255: rescale"),
    (np.array([0.0, np.nan]), "there are NaN or infinite values: replace them first"),
])
def test_images_of_another_dtype_get_advice_that_fits_their_values(values, hint):
    images = np.resize(values, (4, 5, 5, 1))  # every value somewhere in the batch, not only in the first image
    with pytest.raises(TypeError, match=f"images must be uint8 \\(0..255\\), got dtype float64: {hint}"):
        conform_images(images, (5, 5, 1))
