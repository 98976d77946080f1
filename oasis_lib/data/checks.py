"""Strict reading of the slice PNGs: every file is read correctly or refused by name.

What the loader (:class:`~oasis_lib.data.OASISDataset`) and ``summary`` accept, file by file:

=====================  =========================================================================
PNG variant            result
=====================  =========================================================================
0 bytes, truncated,    ``DataError`` naming the file and saying which (empty, cut short, not a
not a PNG              PNG at all)
8-bit grey (L)         read as is; 2- and 4-bit grey are widened to 8 bits by the decoder
16-bit grey            values above 255 present: ``v * 255 / 65535`` (rounded). All values
                       <= 255: the file holds 8-bit values in a 16-bit container, read as is
                       (scaling would make it black). Maximum in 256..4095 (a 12-bit scan):
                       refused, since neither reading is right; convert it to 8 bits first
RGB, RGBA, LA, P       ITU-R 601 luma (exact for grey stored as colour), alpha dropped
1-bit                  refused: a slice or a mask cannot be black and white
=====================  =========================================================================

The first converted file of a dataset is named in one warning. Sizes: the most common size of
the split is the reference, so a size error names the odd file, not the first one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .layout import DataError


def _open_error(path: Path, err: Exception) -> DataError:
    size = path.stat().st_size if path.exists() else None
    if size == 0:
        return DataError(f"{path} is empty (0 bytes): a copy or download stopped early; copy "
                         "the file again or remove it")
    if isinstance(err, PermissionError):
        return DataError(f"{path} cannot be read (permission denied); fix its permissions")
    text = str(err)
    with open(path, "rb") as f:
        png_signature = f.read(8) == b"\x89PNG\r\n\x1a\n"
    if "truncated" in text or isinstance(err, EOFError) or (png_signature and "identify" in text):
        return DataError(f"{path} is truncated ({size} bytes, {text}): a copy or download "
                         "stopped early; copy the file again or remove it")
    return DataError(f"{path} is not a valid PNG image ({text})")


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from the PNG header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DataError(f"{path} is a {im.format} file, not a PNG")
            return im.size[1], im.size[0]
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise _open_error(path, err) from err


def to_grey(im: Image.Image, path: Path) -> np.ndarray:
    """Any PNG mode to uint8 [H, W] grey, as in the module docstring's table."""
    if im.mode == "1":
        raise DataError(f"{path} is a 1-bit (black and white) PNG; slices and masks must be "
                        "8-bit grey (masks 0/85/170/255)")
    if im.mode.startswith("I") or im.mode == "F":
        values = np.asarray(im).astype(np.float64 if im.mode == "F" else np.int64)
        top = values.max(initial=0)
        if values.min(initial=0) < 0:
            raise DataError(f"{path} holds negative values (mode {im.mode}); expected 8- or "
                            "16-bit unsigned grey")
        if top <= 255:
            return values.round().astype(np.uint8)
        if top < 4096:
            raise DataError(f"{path} is a {im.mode} PNG whose values reach only {int(top)} of "
                            "65535 (a 12-bit scan?): neither 8-bit nor full 16-bit; convert it "
                            "to 8-bit grey first (e.g. scale by 255 / 4095)")
        values = values.clip(0, 65535).astype(np.int64)
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.asarray(im.convert("L"))  # RGB/RGBA/LA/P: ITU-R 601-2 luma, alpha dropped


def read_png(path: Path) -> tuple[np.ndarray, str]:
    """Decode one PNG strictly to uint8 [H, W]; also return its original PIL mode."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise DataError(f"{path} is a {im.format} file, not a PNG")
            im.load()
            return (np.array(im) if im.mode == "L" else to_grey(im, path)), im.mode
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # incl. UnidentifiedImageError
        raise _open_error(path, err) from err


def common_size(paths: Sequence[Path], folder: Path, *, threads: int = 4) -> tuple[int, int]:
    """The size every image of a folder has; DataError naming the odd ones out otherwise."""
    with ThreadPoolExecutor(threads) as pool:
        sizes = list(pool.map(png_size, paths))
    counts = Counter(sizes)
    (size, _), *others = counts.most_common()
    if others:
        odd = [(p, s) for p, s in zip(paths, sizes, strict=True) if s != size]
        shown = ", ".join(f"{p.name} is {s[0]}x{s[1]}" for p, s in odd[:5])
        more = f" ... ({len(odd)} in all)" if len(odd) > 5 else ""
        raise DataError(f"images in {folder} differ in size: most ({counts[size]}) are "
                        f"{size[0]}x{size[1]}, but {shown}{more}; resize or remove the odd "
                        "file(s)")
    return size


def check_every_file(dataset, *, threads: int = 4) -> np.ndarray:
    """Decode every (image, mask) pair of an uncached dataset as the loader would; returns
    the pixel counts per class (background, CSF, grey, white) over its masks."""
    def one(index: int) -> np.ndarray:
        _, mask = dataset._decode(index)
        return np.zeros(4, np.int64) if mask is None else np.bincount(mask.ravel(), minlength=4)

    with ThreadPoolExecutor(threads) as pool:
        counts = sum(pool.map(one, range(len(dataset))), np.zeros(4, np.int64))
    dataset._warn_converted()
    return counts
