"""A JPEG's dimensions from its header, before any pixel is decoded (the JPEG-bomb guard of the inference worker).

A frame message declares its input size, and the camera manager encodes exactly that size. A JPEG whose header
says otherwise is refused *before* ``cv2.imdecode``: a 20000x20000 header makes OpenCV allocate 1.2 GB and spend
seconds on one hostile frame, and one past OpenCV's own pixel limit (65500x65500) raises inside the decode pool.

The header is parsed by Pillow's JPEG plugin (``JpegImageFile``), which reads the markers up to the frame header
(SOFn) and decodes nothing. It is called directly rather than through ``Image.open``: other libraries patch
``Image.open`` process-wide (Ultralytics does, and on a failed open tries to import - even pip-install - a HEIF
plugin), and ``Image.open``'s decompression-bomb check would refuse to even report a bomb's size.
"""

from __future__ import annotations

import io

from PIL.JpegImagePlugin import JpegImageFile


class JpegHeaderError(ValueError):
    """Not a JPEG whose header can be read (garbage, truncated before the frame header, another format)."""


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) declared by the JPEG header of ``data``; nothing is decoded.

    Raises :class:`JpegHeaderError` when there is no readable JPEG header.
    """
    try:
        image = JpegImageFile(io.BytesIO(data))
    except (SyntaxError, OSError, ValueError, IndexError, EOFError, KeyError, TypeError) as exc:
        # Pillow's parser raises any of these on hostile bytes (mostly SyntaxError); all mean "no usable header".
        raise JpegHeaderError(f"{type(exc).__name__}: {exc}") from None
    try:
        width, height = image.size
    finally:
        image.close()
    if width <= 0 or height <= 0:
        raise JpegHeaderError(f"header declares {width}x{height}")
    return int(width), int(height)
