"""Synthetic phone screenshots for the agent benchmark: PNG data URLs, a new one every step.

What the vision tower costs depends on the image's size, not on what it shows, so the picture only
has to look like a screen to the PNG encoder (large flat areas, a few bars and tiles, so it
compresses like a real screenshot rather than like noise) and differ in every step and session, so
that no server's multimodal cache can answer it from an earlier request.
"""

from __future__ import annotations

import base64
import io
import random

SCREEN_SIZE = (1080, 2400)  # width, height: a common phone screen, the one Open-AutoGLM's README uses


def screenshot_png(session: int, step: int, size: tuple[int, int] = SCREEN_SIZE) -> bytes:
    """A PNG unique to (session, step): a status bar, a header and a grid of coloured tiles."""
    from PIL import Image, ImageDraw

    width, height = size
    rng = random.Random(session * 100_003 + step)
    image = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, height // 30), fill=(30, 30, 30))
    draw.rectangle((0, height // 30, width, height // 10), fill=tuple(rng.randrange(256) for _ in range(3)))
    tile = max(8, width // 4)
    for top in range(height // 8, height - tile, tile + tile // 8):
        for left in range(tile // 8, width - tile, tile + tile // 8):
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.rectangle((left, top, left + tile, top + tile // 2), fill=colour)
    # A few pixels that encode (session, step) outright, so that no two screens are equal.
    for bit in range(32):
        if (session << 16 | step) >> bit & 1:
            draw.point((bit, height - 1), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
