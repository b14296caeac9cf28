"""Images as hashers consume them: decoding, channel conversion, resizing, pixel features.

An image is a ``(H, W, C)`` uint8 array with ``C`` = 1 (grey) or 3 (RGB). A hasher records the
shape it was fitted on (``input_shape_``); :func:`conform_images` brings images of any size and
channel count to that shape, so that a folder of mixed photos, a single query or an upload can
all be encoded by the same model. NumPy and Pillow only.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np

__all__ = ["to_features", "decode_image", "conform_images", "conversion_note", "channels_note", "as_image_batch", "common_shape", "MixedSizesError", "ResizedToMostCommon", "GREY_MODES", "alpha_note"]

# Pillow modes decoded as one grey channel; everything else becomes RGB (alpha is dropped).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def to_features(images) -> np.ndarray:
    """``(n, H, W, C)`` uint8 images -> ``(n, H*W*C)`` float32 pixels in [0, 1]."""
    images = np.asarray(images)
    return images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)


def decode_image(data: bytes, image_size: tuple[int, int] | None = None, channels: int | None = None,
                 counts: dict | None = None) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, C)`` uint8.

    ``channels`` = 1 or 3 converts (grey is repeated to RGB, RGBA loses its alpha); ``None`` keeps
    grey images grey and makes everything else RGB. ``image_size`` = ``(H, W)`` resizes (bilinear).
    ``counts``: a dict whose ``"alpha"`` entry is incremented when the image had transparency that
    was dropped (some pixel not fully opaque), and its ``"converted"`` entry when ``channels`` made a
    grey image RGB or a colour one grey, for callers that decode many and give one note
    (:func:`alpha_note`, :func:`channels_note`).
    Raises ``OSError``/``ValueError`` for bytes that are not a readable image, and ``ValueError``
    for one that declares more pixels than Pillow's ``MAX_IMAGE_PIXELS`` (a decompression bomb).
    """
    from PIL import Image  # noqa: PLC0415 - keeps `import jaxhash` light

    with warnings.catch_warnings():
        # Pillow warns above its pixel limit and refuses twice that: refuse at the warning.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ValueError(f"the image declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb, "
                             "or a huge picture): resize it first") from None
    with img:
        img.load()
        if counts is not None and _has_transparency(img):
            counts["alpha"] = counts.get("alpha", 0) + 1
        grey = channels == 1 or (channels is None and img.mode in GREY_MODES)
        if counts is not None and channels is not None and grey != (img.mode in GREY_MODES):
            counts["converted"] = counts.get("converted", 0) + 1
        img = img.convert("L" if grey else "RGB")
        if image_size is not None and img.size != (image_size[1], image_size[0]):
            img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
        arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _has_transparency(img) -> bool:
    """Whether a decoded Pillow image has a pixel that is not fully opaque (an alpha band below 255,
    or a palette / colour key declared transparent)."""
    bands = img.getbands()
    if bands[-1] in ("A", "a"):
        return img.getchannel(len(bands) - 1).getextrema()[0] < 255
    return "transparency" in img.info


def alpha_note(count: int, where: str) -> str | None:
    """The note that ``count`` images in ``where`` lost their transparency when decoded, or None."""
    if not count:
        return None
    return (f"{where}: dropped the transparency (alpha channel) of {count} image{'s' if count != 1 else ''}: codes "
            "see the colours stored under transparent pixels; flatten such images onto a background first if those "
            "colours are not meant to be seen")


def as_image_batch(x, model_shape: Sequence[int] | None = None):
    """``x`` as a batch of images, or None when it is not one (feature vectors).

    A 4-D array is ``(n, H, W, C)``; a 3-D array is ``(n, H, W)`` grey images -- unless it looks
    like one ``(H, W, C)`` image (its shape is ``model_shape``, or it ends in 3 or 4 channels
    where the model is not 3 or 4 pixels wide), which is refused with the fix; a list or tuple
    whose items have two or more dimensions is a list of images of any sizes. Device arrays
    are brought to the host once here.
    """
    if isinstance(x, (list, tuple)):
        if len(x) and np.ndim(x[0]) < 2:
            return None
        return x
    arr = np.asarray(x)
    if arr.ndim == 4:
        return arr
    if arr.ndim != 3:
        return None
    one_image = (model_shape is not None and arr.shape == tuple(model_shape)) or (
        arr.shape[-1] in (3, 4) and (model_shape is None or model_shape[1] != arr.shape[-1]))
    if one_image:
        raise ValueError(f"an array of shape {arr.shape} looks like one (H, W, C) image: pass a batch, e.g. image[None] "
                         "(or (n, H, W, C) images)")
    return arr[..., None]


class ResizedToMostCommon(UserWarning):
    """The note that images of several sizes were all resized to the most common one."""


class MixedSizesError(ValueError):
    """Images that must share one size do not; the message says how to resize them."""


def common_shape(images, where: str, mixed_sizes: str = "refuse") -> tuple[int, int, int]:
    """The ``(H, W, C)`` that a set of images of one size is brought to: their size, and the channel
    count of the majority (grey + alpha counts as grey, RGBA as RGB), with one note if some differ.

    When the images differ in size, ``mixed_sizes="refuse"`` raises a :class:`MixedSizesError`
    naming the sizes and the fix (``--image-size`` / ``image_size``); ``"most common"`` takes the
    most common size, with one note (for models that resize every image anyway).
    """
    if mixed_sizes not in ("refuse", "most common"):
        raise ValueError(f"mixed_sizes must be 'refuse' or 'most common', got {mixed_sizes!r}")
    sizes: dict[tuple[int, int], int] = {}
    channel_counts = {1: 0, 3: 0}
    for img in images:
        shape = np.shape(img)
        sizes[shape[:2]] = sizes.get(shape[:2], 0) + 1
        channel_counts[1 if len(shape) == 2 or shape[2] in (1, 2) else 3] += 1
    if not sizes:
        raise ValueError(f"{where}: no images")
    if len(sizes) > 1 and mixed_sizes == "most common":
        (h, w), count = max(sizes.items(), key=lambda kv: kv[1])
        warnings.warn(f"{where} have {len(sizes)} different sizes: all are resized to the most common, {h}x{w} "
                      f"({count} of {sum(sizes.values())} images); image_size=... (--image-size) chooses another",
                      ResizedToMostCommon, stacklevel=3)
        sizes = {(h, w): count}
    if len(sizes) > 1:
        common = sorted(sizes.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{h}x{w} ({n} image{'s' if n != 1 else ''})" for (h, w), n in common[:4]) + (
            ", ..." if len(common) > 4 else "")
        (h, w), _ = common[0]
        raise MixedSizesError(f"{where} have different sizes: {listed}. Resize them to one size: --image-size {h}x{w} on the "
                              f"command line, image_size=({h}, {w}) when loading, or jaxhash.images.conform_images")
    channels = 3 if channel_counts[3] >= channel_counts[1] else 1
    note = channels_note(where, channel_counts[1 if channels == 3 else 3], sum(channel_counts.values()), channels)
    if note:
        warnings.warn(note, stacklevel=3)
    return tuple(int(s) for s in next(iter(sizes))) + (channels,)


def channels_note(where: str, converted: int, total: int, channels: int) -> str | None:
    """The note that ``converted`` of ``total`` images in ``where`` were made RGB (``channels`` 3) or
    grey (1), or None if none were."""
    if not converted:
        return None
    kind = "RGB" if channels == 3 else "grey"
    images = "image" if converted == 1 else "images"
    return (f"{where}: converted {converted} {'grey' if channels == 3 else 'colour'} {images} to {kind} "
            f"({total - converted} of {total} images are {kind})")


def _as_hwc(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"an image must be (H, W) or (H, W, C) with C in 1..4, got shape {image.shape}")
    _check_uint8(image)
    return image


def _check_uint8(images: np.ndarray) -> None:
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got dtype {images.dtype}: {_uint8_hint(images)}")


def _uint8_hint(image: np.ndarray) -> str:
    """How to make uint8 pixels of ``image`` (one or many), judged by its values (the usual advice, x * 255, wraps 0..16 digits)."""
    if image.dtype == np.bool_:
        return "convert with x.astype(np.uint8) * 255"
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        return "pass pixel values"
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        return "there are NaN or infinite values: replace them first"
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0 and hi <= 1:
        return "the values are in 0..1: convert with (x * 255).round().astype(np.uint8)"
    if lo >= 0 and hi <= 255:
        return (f"the values are {lo:g}..{hi:g}: x.round().astype(np.uint8) keeps them as 0..255 levels; "
                f"(x * (255 / {hi:g})).round().astype(np.uint8) stretches 0..{hi:g} to 0..255")
    return (f"the values are {lo:g}..{hi:g}, outside 0..255: rescale, e.g. "
            "((x - x.min()) * (255 / (x.max() - x.min()))).round().astype(np.uint8)")


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    c = image.shape[2]
    if c in (2, 4):  # grey + alpha, RGBA: drop the alpha channel (Pillow's convert does the same)
        image, c = image[..., : c - 1], c - 1
    if c == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    # ITU-R 601-2 luma in Pillow's own fixed point, so that an image made grey here and one made grey by
    # Pillow's convert("L") while decoding (a query, a folder) are the same to the last level
    rgb = image.astype(np.uint32)
    grey = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return grey.astype(np.uint8)[..., None]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR), np.uint8)
    return out[..., None] if out.ndim == 2 else out


def conform_images(images, shape: Sequence[int], counts: dict | None = None) -> np.ndarray:
    """Bring images to ``shape`` = ``(H, W, C)``: convert channels, then resize (bilinear).

    Args:
      images: a ``(n, H, W, C)`` or ``(n, H, W)`` uint8 array, or a list of ``(H, W[, C])`` uint8
        arrays of any sizes and channel counts (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).
      shape: the target ``(H, W, C)``; ``C`` is 1 or 3.
      counts: a dict to add ``{"images", "converted", "resized"}`` to, for callers that convert in
        batches and give one note at the end (:func:`conversion_note`); without it, one warning
        here says what was converted.
    Returns:
      ``(n, H, W, C)`` uint8; the input itself when it already has that shape.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) <= 0:
        raise ValueError(f"target shape must be (H, W, C) with C = 1 or 3, got {shape}")
    if isinstance(images, np.ndarray) and images.dtype != object and images.size:  # the advice judges every value
        _check_uint8(images)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[..., None]  # (n, H, W) grey
    tally = {"images": len(images), "converted": 0, "resized": 0}
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:] == shape and images.dtype == np.uint8:
        out = images
    else:
        out = np.empty((len(images),) + shape, np.uint8)
        for i, image in enumerate(images):
            image = _as_hwc(image)
            if image.shape[2] != shape[2]:
                tally["converted"] += 1
            image = _convert_channels(image, shape[2])
            if image.shape[:2] != shape[:2]:
                tally["resized"] += 1
                image = _resize(image, shape[:2])
            out[i] = image
    if counts is None:
        message = conversion_note(tally, shape)
        if message:
            warnings.warn(message, stacklevel=2)
    else:
        for key, value in tally.items():
            counts[key] = counts.get(key, 0) + value
    return out


def conversion_note(counts: dict, shape: Sequence[int]) -> str | None:
    """One sentence saying how many images :func:`conform_images` converted, or None if none."""
    what = []
    if counts.get("converted"):
        what.append(f"converted {counts['converted']} to {'RGB' if shape[2] == 3 else 'grey'}")
    if counts.get("resized"):
        what.append(f"resized {counts['resized']} to {shape[0]}x{shape[1]}")
    if not what:
        return None
    images = f"{counts['images']} image{'s' if counts['images'] != 1 else ''}"
    return f"{images}: {' and '.join(what)} for the model's input shape {tuple(shape)}"
