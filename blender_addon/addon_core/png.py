"""PNG encoding in pure Python (zlib), for packing a baked texture into a .blend: Blender's Python has no PIL.

zlib releases the GIL while it compresses, so `encode_png` can run on a worker thread while Blender's main
thread keeps drawing.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: zlib level: 1 compresses a 2048 px texture about 4x faster than 6 for files about 15 % larger.
COMPRESSION = 1


def encode_png(image: np.ndarray, level: int = COMPRESSION) -> bytes:
    """An 8-bit RGB or RGBA PNG of `image` (uint8 H x W x 3 or 4, row 0 at the top)."""
    image = np.ascontiguousarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be H x W x 3 or 4, got {image.shape}")
    height, width, channels = image.shape
    # Each row starts with its filter type; 0 (none) keeps this a single numpy copy.
    rows = np.zeros((height, 1 + width * channels), np.uint8)
    rows[:, 1:] = image.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 6, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)), _chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
