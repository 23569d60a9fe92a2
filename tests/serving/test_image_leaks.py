"""A burst of hostile images leaks nothing: this process's RSS and open fds stay bounded.

Each kind of bad image is refused about two thousand times in all (concurrently, as a busy server
would see them); the figures are printed (pytest -s) and the RSS of the later bursts must not climb
above that of the earlier ones.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from autoglm_server.errors import InvalidRequestError
from autoglm_server.serving.images import ImageBudget, ImageLimits, load_image_bytes, load_image_url
from autoglm_server.serving.images.settings import ImageSettings
from tests.helpers import procstats
from tests.serving import image_http
from tests.serving import image_samples as samples

FIELD = "messages[0].content[0].image_url"
BURSTS = 6  # of 30 rounds each, after the warm-up


def hostile_cases(base: str, allowed: Path) -> list[Callable[[ImageLimits], Awaitable[object]]]:
    screenshot = samples.encode(samples.screenshot(540, 1200), "PNG")
    truncated = samples.data_url(screenshot[: len(screenshot) * 3 // 4], "image/png")
    bomb = samples.data_url(samples.png_bomb(20_000, 20_000, with_data=True), "image/png")
    mislabelled = samples.data_url(samples.small("JPEG"), "image/png")
    svg = samples.data_url(samples.SVG, "image/svg+xml")
    bad_base64 = "data:image/png;base64," + "iVBORw0K*" * 1000
    oversize = "data:image/png;base64," + "A" * (2 * 2**20)
    corrupt_webp = samples.small("WEBP", (300, 300))[:-500]
    return [
        lambda limits: load_image_url(truncated, limits, field=FIELD),
        lambda limits: load_image_url(bomb, limits, field=FIELD),
        lambda limits: load_image_url(mislabelled, limits, field=FIELD),
        lambda limits: load_image_url(svg, limits, field=FIELD),
        lambda limits: load_image_url(bad_base64, limits, field=FIELD),
        lambda limits: load_image_url(oversize, limits, field=FIELD),
        lambda limits: load_image_bytes(corrupt_webp, "image/webp", limits, field=FIELD),
        lambda limits: load_image_url("http://169.254.169.254/latest/meta-data/", limits, field=FIELD),
        lambda limits: load_image_url(f"{base}/img/missing.png", limits, field=FIELD),
        lambda limits: load_image_url(f"file://{allowed}/../etc/passwd", limits, field=FIELD),
        lambda limits: load_image_url(f"file://{allowed}/missing.png", limits, field=FIELD),
    ]


async def burst(cases: list[Callable[[ImageLimits], Awaitable[object]]], limits: ImageLimits, rounds: int) -> int:
    refused = 0
    for _ in range(rounds):
        results = await asyncio.gather(*(case(limits) for case in cases), return_exceptions=True)
        for result in results:
            assert isinstance(result, InvalidRequestError), result
            refused += 1
    return refused


async def test_a_burst_of_bad_images_leaks_no_memory_or_fds(tmp_path: Path) -> None:
    listener = image_http.start()
    try:
        limits = ImageLimits.from_settings(
            ImageSettings(
                allowed_image_url_prefixes=[f"{listener.base}/img/"],
                allowed_local_image_dir=str(tmp_path),
                max_image_bytes=2**20,
            )
        )
        cases = hostile_cases(listener.base, tmp_path)
        await burst(cases, limits, rounds=5)  # warm-up: worker threads, allocator pools, TLS context
        gc.collect()
        before = procstats.sample(os.getpid())
        count, rss_mib = 0, []
        for _ in range(BURSTS):
            count += await burst(cases, limits, rounds=30)
            gc.collect()
            rss_mib.append(procstats.sample(os.getpid()).rss_mib)
        after = procstats.sample(os.getpid())
    finally:
        listener.stop()
    # A leak grows with every burst; the allocator's arenas (one per decode thread) settle at a level
    # that wanders by several MiB from burst to burst. So the later bursts' peak is compared with
    # the earlier ones', not one sample with another.
    half = BURSTS // 2
    growth_mib = max(rss_mib[half:]) - max(rss_mib[:half])
    print(
        f"\n{count} bad images refused: RSS {before.rss_mib:.1f} MiB, then per burst"
        f" {', '.join(f'{r:.1f}' for r in rss_mib)} (later peak - earlier peak {growth_mib:+.1f}),"
        f" fds {before.open_fds} -> {after.open_fds}, threads {before.threads} -> {after.threads}"
    )
    assert count == BURSTS * 30 * len(cases)
    assert after.open_fds <= before.open_fds + 2
    assert growth_mib < 16
    # And a good image still loads after all that, with a fresh budget.
    good = samples.data_url(samples.small("PNG"), "image/png")
    assert (await load_image_url(good, limits, field=FIELD, budget=ImageBudget(limits))).width == 64
