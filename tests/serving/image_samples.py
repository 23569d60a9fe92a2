"""Images built in code for the image tests and benchmark: real encodings made with Pillow, and hostile
files crafted byte by byte (a PNG header that claims a huge size, truncations, formats we refuse)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image, ImageDraw

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def data_url(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def screenshot(width: int = 1080, height: int = 2400) -> Image.Image:
    """Something like a phone screenshot: flat bars, cards, text-like strokes and a noisy photo area,
    so that the PNG compresses like a real one (about 1 MB at 1080x2400) rather than to nothing."""
    image = Image.new("RGB", (width, height), (245, 245, 247))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 90), fill=(30, 30, 34))
    for row in range(max(0, (height - 560) // 150)):
        top = 140 + row * 150
        draw.rounded_rectangle((40, top, width - 40, top + 120), radius=24, fill=(255, 255, 255))
        for line in range(3):
            y = top + 25 + line * 30
            draw.line((80, y, 80 + (row * 97 + line * 131) % max(1, width - 200) + 100, y), fill=(60, 60, 70), width=6)
    photo = Image.effect_noise((width - 80, min(360, height // 4)), 60).convert("RGB")
    image.paste(photo, (40, height - photo.height - 60))
    return image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 30_000, height: int = 30_000, *, with_data: bool = False) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels. Without data it has no IDAT at all, so any
    attempt to decode it would fail as truncated: a size error proves the header check came first.
    With data, one small IDAT of zlib-compressed zero rows that would inflate to the full size."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = b""
    if with_data:
        compressor = zlib.compressobj(9)
        row = b"\x00" * (1 + 3 * width)
        # 64 rows are plenty to make the point; the file stays a few KB whatever the claimed size.
        body = png_chunk(b"IDAT", compressor.compress(row * 64) + compressor.flush())
    return PNG_SIGNATURE + ihdr + body + png_chunk(b"IEND", b"")


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'


def small(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **options: object) -> bytes:
    """A small noisy image in `fmt` (noise so that truncating it cuts real compressed data)."""
    image = Image.effect_noise(size, 50).convert(mode)
    return encode(image, fmt, **options)


def jpeg_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A real small JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(small("JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_bomb(width: int = 16_383, height: int = 16_383) -> bytes:
    """A real small lossy WebP whose VP8 frame header is patched to claim width x height."""
    data = bytearray(small("WEBP"))
    frame = data.find(b"VP8 ") + 8  # chunk header; then a 3-byte frame tag and the 9d 01 2a start code
    data[frame + 6 : frame + 10] = struct.pack("<HH", width, height)
    return bytes(data)


def png_text_bomb(inflated: int = 4 * 2**20) -> bytes:
    """A small valid PNG with a zTXt chunk that inflates to `inflated` bytes of text."""
    data = small("PNG")
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * inflated, 9))
    return data[:33] + ztxt + data[33:]  # after the signature and IHDR
