"""JPEG checks made before anything is decoded: a 631-byte file can claim 32768x32768 pixels, and decoding it
would take gigabytes. The size comes from the frame header (SOF segment), read without decoding."""

from __future__ import annotations

from services.common.schemas import MAX_FRAME_BYTES, BadPayload

# The most pixels any SentryCam service decodes: 40 Mpixel is beyond every camera sold (8K is 33 Mpixel) and
# costs 120 MB decoded, once; a forged header claiming more is refused before the decode.
MAX_IMAGE_PIXELS = 40_000_000

SOI = b"\xff\xd8"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic...); C4, C8 and CC are other segments.
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length: restart markers, TEM, and SOI itself.
STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
EOI, SOS = 0xD9, 0xDA


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's frame header; BadPayload when the data is no JPEG or has no header."""
    if not data.startswith(SOI):
        raise BadPayload(f"not a JPEG ({len(data)} bytes starting {data[:8]!r})")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise BadPayload(f"not a JPEG: no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (EOI, SOS):
            break  # the image data starts (or ends) before any frame header
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            raise BadPayload(f"not a JPEG: segment length {length} at byte {position}")
        if marker in SOF_MARKERS:
            header = data[position + 4 : position + 2 + length]
            if len(header) < 5:
                raise BadPayload("truncated JPEG frame header")
            height = int.from_bytes(header[1:3], "big")
            width = int.from_bytes(header[3:5], "big")
            if width == 0 or height == 0:
                raise BadPayload(f"JPEG of {width}x{height} pixels")
            return width, height
        position += 2 + length
    raise BadPayload("JPEG without a frame header")


def check_jpeg(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a JPEG that is safe to decode; BadPayload naming the limit it breaks."""
    if len(data) > max_bytes:
        raise BadPayload(f"JPEG of {len(data)} bytes, more than {max_bytes}")
    width, height = jpeg_size(data)
    if width * height > max_pixels:
        raise BadPayload(f"JPEG of {width}x{height} pixels, more than {max_pixels}")
    return width, height


def check_snapshot(data: bytes) -> tuple[int, int]:
    """A detector's snapshot, checked before the web relay thumbnails it or the notifier attaches it."""
    return check_jpeg(data, max_bytes=MAX_FRAME_BYTES, max_pixels=MAX_IMAGE_PIXELS)
