"""PNG files written by hand (no imaging library), for the emulator's images and the tests' uploads."""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(header: bytes, compressed_rows: bytes) -> bytes:
    return SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", compressed_rows) + png_chunk(b"IEND", b"")


def solid_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A solid-colour 8-bit RGB PNG of width × height pixels."""
    rows = (b"\x00" + bytes(rgb) * width) * height  # each row: filter byte "none", then the pixels
    return png_file(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0), zlib.compress(rows, 6))
