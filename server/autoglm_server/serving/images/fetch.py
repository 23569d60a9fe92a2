"""Reading the bytes of an image URL an operator allowed: http(s) below a prefix, file:// below a directory.

Both are off by default (see settings.py). Where allowed, each read is bounded: no redirects, a
total timeout, a size cap enforced while streaming (and from Content-Length before), no content
decoding (a gzip body could be a bomb of its own); a local file must resolve, symlinks and all, to a
regular file inside the allowed directory, and is opened so that a swapped-in symlink or FIFO cannot
redirect or hang the read.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx2

from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError
from autoglm_server.serving.images.limits import ImageLimits

_HEADERS = {
    "Accept": "image/png, image/jpeg, image/webp",
    "Accept-Encoding": "identity",
    "User-Agent": "autoglm-serve",
}
_NOT_BELOW = (
    "the file:// URL does not name a readable file below the directory the operator allows (--allowed-local-image-dir)"
)


def too_large(field: str, nbytes: int | str, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        field, f"the image is {nbytes} bytes; the limit is {limit} bytes per image (--max-image-bytes)"
    )


async def fetch_http(url: httpx2.URL, limits: ImageLimits, field: str) -> tuple[bytes, str]:
    """GET `url` (already matched against the allowed prefixes): its body and Content-Type."""
    seconds = limits.fetch_timeout_s
    try:
        # httpx2's timeouts bound each read; asyncio.timeout bounds the whole fetch (a slow drip).
        async with (
            asyncio.timeout(seconds),
            httpx2.AsyncClient(
                verify=await asyncio.to_thread(_tls_context),
                follow_redirects=False,
                trust_env=False,  # no proxies or .netrc from the environment
                timeout=httpx2.Timeout(seconds),
                headers=_HEADERS,
            ) as client,
            client.stream("GET", url) as response,
        ):
            _check_response(response, limits, field)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > limits.max_image_bytes:
                    raise too_large(field, f"more than {limits.max_image_bytes}", limits.max_image_bytes)
            return bytes(body), response.headers.get("content-type", "")
    except TimeoutError:
        raise InvalidRequestError(
            field, f"fetching the image URL took longer than {seconds:g} s (--image-fetch-timeout)"
        ) from None
    except httpx2.HTTPError as error:
        raise InvalidRequestError(field, f"could not fetch the image URL ({type(error).__name__})") from None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once (loading the trust store takes ~80 ms); SSL_CERT_FILE / SSL_CERT_DIR still apply.
    return httpx2.create_ssl_context()


def _check_response(response: httpx2.Response, limits: ImageLimits, field: str) -> None:
    status = response.status_code
    if 300 <= status < 400:
        raise InvalidRequestError(
            field, f"the image URL answered HTTP {status} (a redirect); redirects are not followed"
        )
    if status != 200:
        raise InvalidRequestError(field, f"the image URL answered HTTP {status}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"", "identity"}:
        raise InvalidRequestError(
            field, f"the image URL sent Content-Encoding {encoding[:32]!r}; only identity is read"
        )
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_image_bytes:
        raise too_large(field, int(length), limits.max_image_bytes)


def read_local_file(raw: str, limits: ImageLimits, field: str) -> bytes:
    """Read a file:// URL below the allowed directory. Blocking: call it in a worker thread.

    Every way of not being a readable regular file inside the directory gets the same message, so that
    a caller cannot probe which paths exist elsewhere on the host.
    """
    root = limits.allowed_local_dir
    if root is None:
        raise InvalidRequestError(
            field,
            "file:// image URLs are refused: the server does not read local files a caller names; send the"
            " image as a data: URL (an operator may allow a directory with --allowed-local-image-dir)",
        )
    parts = urlsplit(raw)
    if parts.netloc not in {"", "localhost"} or parts.query or parts.fragment:
        raise InvalidRequestError(field, "a file:// URL must be file:///absolute/path, without host or query")
    path = unquote(parts.path)
    if "\x00" in path or any(segment in {".", ".."} for segment in path.split("/")):
        raise InvalidRequestError(field, "the file:// URL contains '.' or '..' segments or a NUL; it is refused")
    try:
        target = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a loop, a component that is not a directory
        raise InvalidRequestError(field, _NOT_BELOW) from None
    if not target.is_relative_to(root):
        raise InvalidRequestError(field, _NOT_BELOW)
    return _read_regular_file(target, root, limits.max_image_bytes, field)


def _read_regular_file(target: Path, root: Path, limit: int, field: str) -> bytes:
    # O_NOFOLLOW: a symlink put in place after resolve() fails the open; O_NONBLOCK: a FIFO cannot
    # block the open (and is refused by the fstat below).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target, flags)
    except OSError:
        raise InvalidRequestError(field, _NOT_BELOW) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _still_inside(fd, root):
            raise InvalidRequestError(field, _NOT_BELOW)
        if info.st_size > limit:
            raise too_large(field, info.st_size, limit)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # the file grew after fstat
                raise too_large(field, f"more than {limit}", limit)
        return b"".join(chunks)
    except OSError:
        raise InvalidRequestError(field, _NOT_BELOW) from None
    finally:
        os.close(fd)


def _still_inside(fd: int, root: Path) -> bool:
    # What the descriptor really opened (a directory above the file may have been swapped for a
    # symlink between resolve() and open()); Linux names it under /proc/self/fd.
    proc = Path(f"/proc/self/fd/{fd}")
    if not proc.exists():
        return True  # not Linux: resolve() and O_NOFOLLOW are the checks there
    return Path(os.readlink(proc)).is_relative_to(root)
