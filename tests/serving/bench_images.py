"""Micro-benchmark of image loading (not a test): what one Open-AutoGLM screenshot costs the server.

    .venv/bin/python -m tests.serving.bench_images [--runs 30]

Prints, for a 1080x2400 phone-screenshot-like image as a data: URL in PNG, JPEG and WebP, the time of
`load_image_url` (p50 / p95 / min over the runs) and a breakdown of one PNG load by stage, then the
throughput of concurrent loads (they run in worker threads) and the time to refuse a bomb.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from PIL import Image, PngImagePlugin

from autoglm_server.errors import PayloadTooLargeError
from autoglm_server.serving.images import ImageLimits, load_image_url
from tests.serving import image_samples as samples

LIMITS = ImageLimits()
FIELD = "messages[1].content[0].image_url"


async def timed(make: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    await make()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await make()
        times.append(time.perf_counter() - started)
    return times


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1e3:6.1f} ms  p95 {p95 * 1e3:6.1f} ms  min {ordered[0] * 1e3:6.1f} ms"


def stages(url: str) -> list[tuple[str, float]]:
    """One PNG load, stage by stage, as image_decode does it (synchronously, no thread hop)."""
    out: list[tuple[str, float]] = []
    started = time.perf_counter()
    data = base64.b64decode(url.partition(",")[2], validate=True)
    out.append(("base64 decode", time.perf_counter() - started))
    started = time.perf_counter()
    with PngImagePlugin.PngImageFile(io.BytesIO(data)) as header:
        _ = header.size
    out.append(("header (size check)", time.perf_counter() - started))
    started = time.perf_counter()
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    out.append(("decode all pixels (RGB: no conversion)", time.perf_counter() - started))
    started = time.perf_counter()
    image.convert("RGBA")
    out.append(("(an RGBA screenshot would add) convert", time.perf_counter() - started))
    started = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    out.append(("sha256 of the encoded bytes", time.perf_counter() - started))
    return out


async def main(runs: int) -> None:
    screenshot = samples.screenshot()
    print(f"1080x2400 screenshot-like image, {runs} runs each, {os.cpu_count()} CPUs")
    urls = {}
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        data = samples.encode(screenshot, fmt, **({"quality": 90} if fmt != "PNG" else {}))
        urls[fmt] = samples.data_url(data, mime)
        times = await timed(lambda url=urls[fmt]: load_image_url(url, LIMITS, field=FIELD), runs)
        print(
            f"  {fmt:4}  {len(data) / 1e6:5.2f} MB encoded, {len(urls[fmt]) / 1e6:5.2f} MB data URL  {figures(times)}"
        )

    print("one PNG load by stage:")
    for name, seconds in stages(urls["PNG"]):
        print(f"  {name:40} {seconds * 1e3:6.2f} ms")

    for concurrency in (1, 4, 16):
        started = time.perf_counter()
        total = 4 * concurrency
        for _ in range(4):
            await asyncio.gather(*(load_image_url(urls["PNG"], LIMITS, field=FIELD) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        print(f"  {concurrency:2} concurrent PNG loads: {total / elapsed:5.1f} images/s")

    bomb = samples.data_url(samples.png_bomb(30_000, 30_000, with_data=True), "image/png")

    async def refuse_bomb() -> None:
        try:
            await load_image_url(bomb, LIMITS, field=FIELD)
        except PayloadTooLargeError:
            return
        raise AssertionError("the bomb loaded")

    print(f"refusing a 30000x30000 PNG bomb ({len(bomb)} bytes of data URL): {figures(await timed(refuse_bomb, runs))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args().runs))
