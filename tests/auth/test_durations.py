"""parse_duration: the duration strings operators pass to --ttl, --min-key-age and friends."""

from __future__ import annotations

import pytest

from autoglm_server.auth.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("45s", 45.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1d2h3m4s", 86400.0 + 7200 + 180 + 4),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("  10m  ", 600.0),  # shells and env files leave stray spaces
        ("1m1ms", 60.001),
    ],
)
def test_valid_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "m",
        "15 m",
        "1h 30m",
        "15min",
        "10M",
        "1w",
        "h1",
        "-5",
        "-5s",
        "nan",
        "inf",
        "1.2.3s",
        "15m!",
        "ten minutes",
    ],
)
def test_invalid_durations_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration") as caught:
        parse_duration(text)
    assert repr(text.strip()) in str(caught.value)
