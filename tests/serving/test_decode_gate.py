"""The process-wide decode budget (--max-decode-pixels): measured through the real decode path.

The pixels in decode at once are counted by wrapping image_decode.decode_probed, the function that
decodes every pixel (with Pillow, for real) in a worker thread; the wrapper only counts and widens
the window in which decodes could overlap. Without the gate, the default executor's threads would
run up to min(32, cores + 4) of them at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from autoglm_server.engine.types import ImageInput
from autoglm_server.errors import OverloadedError, StartupError
from autoglm_server.serving.images import ImageLimits, load_image_bytes, load_image_url
from autoglm_server.serving.images import decode as image_decode
from autoglm_server.serving.images.decode import Probe
from autoglm_server.serving.images.gate import DecodeGate
from autoglm_server.serving.images.settings import ImageSettings
from tests.serving import image_samples as samples

FIELD = "messages[0].content[0]"


class InFlight:
    """Counts the pixels inside decode_probed at once, from the worker threads."""

    def __init__(self, real: Callable[[bytes, Probe, str], ImageInput], hold_s: float) -> None:
        self._real = real
        self._hold_s = hold_s
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.running = 0
        self.most_running = 0
        self.decoded = 0

    def __call__(self, data: bytes, probed: Probe, field: str) -> ImageInput:
        with self._lock:
            self.now += probed.pixels
            self.peak = max(self.peak, self.now)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self._hold_s)  # so that decodes the gate lets through really overlap
            image = self._real(data, probed, field)
            assert image.width * image.height == probed.pixels
            return image
        finally:
            with self._lock:
                self.now -= probed.pixels
                self.running -= 1
                self.decoded += 1


@pytest.fixture
def in_flight(monkeypatch: pytest.MonkeyPatch) -> InFlight:
    counter = InFlight(image_decode.decode_probed, hold_s=0.05)
    monkeypatch.setattr(image_decode, "decode_probed", counter)
    return counter


async def test_decodes_in_flight_never_exceed_the_pixel_budget(in_flight: InFlight) -> None:
    sizes = [(400, 300), (200, 300), (600, 400), (300, 100)] * 4  # 120k, 60k, 240k and 30k pixels
    budget = 300_000
    limits = ImageLimits(max_decode_pixels=budget, decode_wait_s=60)
    urls = [samples.data_url(samples.small("PNG", size), "image/png") for size in sizes]
    images = await asyncio.gather(*(load_image_url(url, limits, field=f"{FIELD}[{n}]") for n, url in enumerate(urls)))
    assert [(image.width, image.height) for image in images] == sizes
    assert in_flight.decoded == len(sizes)
    assert in_flight.peak <= budget
    assert in_flight.most_running >= 2  # decodes did run side by side where the budget let them
    assert limits.decode_gate.in_use == 0


async def test_without_room_in_time_the_decode_is_refused_as_overloaded(in_flight: InFlight) -> None:
    png = samples.small("PNG", (100, 100))
    limits = ImageLimits(max_image_pixels=10_000, max_decode_pixels=10_000, decode_wait_s=0.2)
    gate = limits.decode_gate
    await gate.acquire(10_000, field="another request")
    started = time.monotonic()
    with pytest.raises(OverloadedError) as caught:
        await load_image_bytes(png, "image/png", limits, field=FIELD)
    waited = time.monotonic() - started
    assert 0.2 <= waited < 2.0
    error = caught.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "decode_busy"
    assert 0 < error.retry_after_s <= 10
    assert error.message.startswith(f"{FIELD}: the server is decoding too many images at once (10000 pixels")
    assert "--image-decode-wait" in error.message
    assert in_flight.decoded == 0
    assert gate.waiting == 0
    gate.release(10_000)
    assert (await load_image_bytes(png, "image/png", limits, field=FIELD)).width == 100
    assert gate.in_use == 0


async def test_room_is_granted_in_arrival_order() -> None:
    gate = DecodeGate(10, wait_s=60)
    await gate.acquire(6, field="a")
    big = asyncio.ensure_future(gate.acquire(6, field="b"))
    small = asyncio.ensure_future(gate.acquire(2, field="c"))  # would fit now, but b came first
    await asyncio.sleep(0.01)
    assert not big.done()
    assert not small.done()
    gate.release(6)
    await asyncio.wait_for(asyncio.gather(big, small), timeout=5)
    assert gate.in_use == 8


async def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_in() -> None:
    gate = DecodeGate(10, wait_s=60)
    await gate.acquire(4, field="a")
    head = asyncio.ensure_future(gate.acquire(8, field="b"))
    behind = asyncio.ensure_future(gate.acquire(5, field="c"))
    await asyncio.sleep(0.01)
    head.cancel()
    await asyncio.wait_for(behind, timeout=5)  # 4 + 5 fit once the 8 stopped waiting
    assert head.cancelled()
    assert gate.in_use == 9
    assert gate.waiting == 0


async def test_a_cancelled_caller_holds_its_room_until_its_thread_has_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    entered = threading.Event()
    go_on = threading.Event()
    finished = threading.Event()
    real = image_decode.decode_probed

    def held(data: bytes, probed: Probe, field: str) -> ImageInput:
        entered.set()
        go_on.wait(timeout=30)
        try:
            return real(data, probed, field)
        finally:
            finished.set()

    monkeypatch.setattr(image_decode, "decode_probed", held)
    limits = ImageLimits()
    gate = limits.decode_gate
    caller = asyncio.ensure_future(load_image_bytes(samples.small("PNG", (50, 40)), "", limits, field=FIELD))
    assert await asyncio.to_thread(entered.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert gate.in_use == 2000  # the thread still decodes: its pixels are still in memory
    go_on.set()
    assert await asyncio.to_thread(finished.wait, 10)
    # The loop then runs the thread's done callback, which frees the room (soon, not at once).
    for _ in range(1000):  # up to ~10 s
        if not gate.in_use:
            break
        await asyncio.sleep(0.01)
    assert gate.in_use == 0


def test_defaults_and_the_budget_must_hold_the_largest_image() -> None:
    settings = ImageSettings()
    assert settings.max_decode_pixels == 4 * settings.max_image_pixels == 160_000_000
    assert settings.image_decode_wait == 10.0
    limits = ImageLimits.from_settings(settings)
    assert (limits.decode_gate.budget_pixels, limits.decode_gate.wait_s) == (160_000_000, 10.0)
    with pytest.raises(StartupError, match="--max-decode-pixels 1000 is below --max-image-pixels 2000"):
        ImageLimits.from_settings(ImageSettings(max_image_pixels=2000, max_decode_pixels=1000))
