"""Decoding one image file: bounded before any pixel is decoded.

Pillow reads only the header in `Image.open`; the size it reports is checked against
MAX_IMAGE_PIXELS before decoding, so a small file that claims 40000x40000 pixels (a
decompression bomb) is refused without allocating them. Pillow's own DecompressionBombError
(beyond ~179 Mpx) is far above this bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfship.config import DataConfig
from tfship.errors import DataError

MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of one encoded image
MAX_IMAGE_FILE_BYTES = 64 * 2**20


def resize_gray_or_rgb(img: Any, cfg: DataConfig) -> np.ndarray:
    from PIL import Image

    img = img.convert("L" if cfg.channels == 1 else "RGB")
    h, w = cfg.image_size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    return arr.reshape(h, w, cfg.channels)


def decode_image(source: Any, cfg: DataConfig, where: str) -> np.ndarray:
    """Decode one image file object, refusing bombs (> MAX_IMAGE_PIXELS) and broken files."""
    from PIL import Image

    try:
        with Image.open(source) as img:  # reads the header only
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{where} is {w}x{h} pixels; expected at most {MAX_IMAGE_PIXELS} "
                    "(a decompression bomb, or far larger than data.image_size needs)",
                    hint="downscale it or remove it",
                )
            return resize_gray_or_rgb(img, cfg)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, far larger, bound
        raise DataError(
            f"{where} is a decompression bomb: {exc}; expected at most {MAX_IMAGE_PIXELS} pixels",
            hint="downscale it or remove it",
        ) from None
    # Untrusted bytes: PIL reports broken files as OSError, SyntaxError, ValueError,
    # struct.error, EOFError, DecompressionBombError, ... All mean "cannot decode this file".
    except Exception as exc:
        raise DataError(
            f"cannot read {where}: {type(exc).__name__}: {str(exc)[:200]}",
            hint="delete or re-encode the file",
        ) from None
