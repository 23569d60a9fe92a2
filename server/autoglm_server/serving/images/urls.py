"""Which http(s) image URLs the daemon may fetch: an operator's prefixes, matched strictly.

A plain `url.startswith(prefix)` is not enough: `https://cdn.example.com` is a prefix of
`https://cdn.example.com.evil.net/x` and of `https://cdn.example.com@10.0.0.1/x`, and
`https://cdn/img/../admin` starts with `https://cdn/img/`. So a URL must start with the prefix as
written AND, parsed the way the HTTP client will parse it, have the prefix's scheme, host and port, no
userinfo, no dot segments (raw or percent-encoded) and a path below the prefix's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx2

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Anything a well-formed URL never carries raw: controls, whitespace, backslashes (which some parsers
# read as '/'), and non-ASCII (IDNA tricks); such a URL is refused rather than normalised.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\]")


@dataclass(frozen=True, slots=True)
class UrlPrefix:
    """One allowed prefix, as written and as parsed."""

    text: str
    scheme: str
    host: str
    port: int
    path: str


def parse_prefix(text: str) -> UrlPrefix:
    """Parse an operator's prefix; ValueError says what is wrong with it."""
    if _FORBIDDEN.search(text):
        raise ValueError(f"image URL prefix {text!r} contains whitespace, a backslash or non-ASCII characters")
    try:
        url = httpx2.URL(text)
    except httpx2.InvalidURL as error:
        raise ValueError(f"image URL prefix {text!r} is not a URL: {error}") from None
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        raise ValueError(f"image URL prefix {text!r} must be http:// or https:// with a host")
    if url.userinfo or "@" in urlsplit(text).netloc:
        raise ValueError(f"image URL prefix {text!r} must not carry userinfo ('@')")
    if url.query or url.fragment:
        raise ValueError(f"image URL prefix {text!r} must not carry a query or fragment")
    if _has_dot_segment(urlsplit(text).path):
        raise ValueError(f"image URL prefix {text!r} must not contain '.' or '..' segments")
    return UrlPrefix(text, url.scheme, url.host, _port(url), url.raw_path.decode("ascii"))


def match_prefix(raw: str, prefixes: tuple[UrlPrefix, ...]) -> tuple[httpx2.URL | None, str]:
    """The URL to fetch when `raw` is below one of `prefixes`; else None and why not (for the caller)."""
    if _FORBIDDEN.search(raw):
        return None, "the image URL contains whitespace, a backslash or non-ASCII characters"
    if "@" in urlsplit(raw).netloc:
        return None, "the image URL carries userinfo ('@'); it is refused"
    if _has_dot_segment(urlsplit(raw).path):
        return None, "the image URL contains '.' or '..' path segments; it is refused"
    try:
        url = httpx2.URL(raw)
    except httpx2.InvalidURL:
        return None, "the image URL is not a valid URL"
    path = url.raw_path.decode("ascii").partition("?")[0]
    for prefix in prefixes:
        if (
            raw.startswith(prefix.text)
            and not url.userinfo
            and (url.scheme, url.host, _port(url)) == (prefix.scheme, prefix.host, prefix.port)
            and path.startswith(prefix.path)
        ):
            return url, ""
    return None, (
        "the image URL is not below any prefix the operator allows (--allowed-image-url-prefixes);"
        " send the image as a data: URL"
    )


def _port(url: httpx2.URL) -> int:
    return url.port if url.port is not None else _DEFAULT_PORTS[url.scheme]


def _has_dot_segment(path: str) -> bool:
    # Decoded twice so that %2e%2e and %252e%252e are caught as well as a literal '..'.
    decoded = unquote(unquote(path))
    return any(segment in {".", ".."} for segment in decoded.replace("\\", "/").split("/"))
