"""The 256 printable stand-ins of bytes that the built-in models' byte-level tokenizers use."""

from __future__ import annotations


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of bytes used by byte-level BPE (GPT-2's reversible mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    by_byte = dict(zip(printable, codes, strict=True))
    return [chr(by_byte[b]) for b in range(256)]
