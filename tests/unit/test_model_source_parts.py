"""The manifest's part hashes: written in one read by `model push`, checked range by range on fetch.

What a part hash proves is checked against hashlib directly; the SeaweedFS suite
(tests/model_source) runs the same code over the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

import pytest

from autoglm_server.model_source.errors import IntegrityError
from autoglm_server.model_source.manifest import ManifestEntry, PartHashes, parse_manifest, render_manifest
from autoglm_server.model_source.verify import Expected, RangeVerifier, hash_file, range_hashes

PART = 64 * 1024


def reference_parts(data: bytes, part: int) -> list[str]:
    return [hashlib.sha256(data[i : i + part]).hexdigest() for i in range(0, len(data), part)]


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART, 3 * PART + 17])
def test_push_hashes_the_whole_file_and_each_part_in_one_read(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    whole, parts = hash_file(path, PART)
    assert whole == hashlib.sha256(data).hexdigest()
    if size <= PART:
        assert parts is None, "a file of one part needs no part list: its sha256 is that part's"
    else:
        assert parts == PartHashes(PART, tuple(reference_parts(data, PART)))


def test_parts_survive_the_manifest_and_an_old_manifest_has_none() -> None:
    data = os.urandom(2 * PART + 5)
    parts = PartHashes(PART, tuple(reference_parts(data, PART)))
    entries = [
        ManifestEntry(PurePosixPath("model.safetensors"), len(data), hashlib.sha256(data).hexdigest(), parts),
        ManifestEntry(PurePosixPath("config.json"), 2, hashlib.sha256(b"{}").hexdigest()),
    ]
    parsed = parse_manifest(render_manifest(entries), where="s3://b/m")
    assert parsed[PurePosixPath("model.safetensors")].parts == parts
    assert parsed[PurePosixPath("config.json")].parts is None
    assert "part_size" not in json.loads(render_manifest(entries[1:]))["files"][0]


@pytest.mark.parametrize(
    ("part_size", "hashes", "reason"),
    [
        (PART, ["0" * 64] * 2, "does not cover"),  # 3 parts needed
        (PART, ["0" * 64] * 4, "does not cover"),
        (1024, ["0" * 64] * 193, "bad part_size"),  # below the smallest part: a manifest too large
        (PART, ["0" * 64, "0" * 64, "XYZ"], "does not cover"),
        (PART, "0" * 64, "bad part_size or part_sha256"),
    ],
)
def test_a_part_list_that_does_not_fit_its_file_is_refused(part_size: int, hashes: object, reason: str) -> None:
    item = {"path": "w.bin", "size": 2 * PART + 5, "sha256": "0" * 64, "part_size": part_size, "part_sha256": hashes}
    raw = json.dumps({"format": "autoglm-model-manifest/1", "files": [item]}).encode()
    with pytest.raises(IntegrityError, match=reason):
        parse_manifest(raw, where="s3://b/m")


@pytest.mark.parametrize(("size", "hashes"), [(PART, ["0" * 64]), (10, ["0" * 64]), (0, [])])
def test_part_hashes_of_fewer_than_two_parts_are_refused(size: int, hashes: list[str]) -> None:
    """One part is the whole file (and none an empty one): the whole-file sha256 must decide, so that a
    part hash differing from it, or an empty list beside any sha256, cannot pass a file as verified."""
    item = {"path": "w.bin", "size": size, "sha256": "1" * 64, "part_size": PART, "part_sha256": hashes}
    raw = json.dumps({"format": "autoglm-model-manifest/1", "files": [item]}).encode()
    with pytest.raises(IntegrityError, match="two or more"):
        parse_manifest(raw, where="s3://b/m")


def feed(verifier: RangeVerifier, data: bytes, block: int) -> None:
    view = memoryview(data)
    for i in range(0, len(data), block):
        verifier.update(view[i : i + block])


@pytest.mark.parametrize("block", [1000, PART, PART + 3, 4 * PART])
def test_a_range_of_good_bytes_passes_however_the_network_cuts_it(block: int) -> None:
    data = os.urandom(4 * PART + 100)
    parts = PartHashes(PART, tuple(reference_parts(data, PART)))
    for start, end in ((0, 2 * PART), (2 * PART, len(data))):  # two ranges of two parts, the last one short
        feed(RangeVerifier(parts, len(data), start, "s3://b/w.bin"), data[start:end], block)


def test_a_flipped_byte_fails_its_part_naming_the_file_and_the_bytes() -> None:
    data = bytearray(os.urandom(3 * PART))
    parts = PartHashes(PART, tuple(reference_parts(bytes(data), PART)))
    data[PART + 7] ^= 0x01
    verifier = RangeVerifier(parts, len(data), 0, "s3://b/w.bin")
    verifier.update(memoryview(bytes(data[:PART])))  # the first part is still good
    with pytest.raises(
        IntegrityError, match=rf"s3://b/w\.bin: sha256 .* of bytes {PART}-{2 * PART - 1} does not match"
    ):
        verifier.update(memoryview(bytes(data[PART:])))


def test_a_flipped_byte_in_the_short_last_part_is_caught() -> None:
    data = bytearray(os.urandom(2 * PART + 100))
    parts = PartHashes(PART, tuple(reference_parts(bytes(data), PART)))
    data[-1] ^= 0x80
    verifier = RangeVerifier(parts, len(data), 2 * PART, "s3://b/w.bin")
    with pytest.raises(IntegrityError, match=rf"of bytes {2 * PART}-{len(data) - 1} does not match"):
        feed(verifier, bytes(data[2 * PART :]), 37)


def test_bytes_past_the_end_of_the_file_are_refused() -> None:
    data = os.urandom(PART + 10)
    verifier = RangeVerifier(PartHashes(PART, tuple(reference_parts(data, PART))), len(data), 0, "s3://b/w.bin")
    with pytest.raises(IntegrityError, match="more bytes"):
        verifier.update(memoryview(data + b"x"))


def test_a_range_off_a_part_boundary_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="boundary"):
        RangeVerifier(PartHashes(PART, ("0" * 64,) * 2), PART + 1, 5, "s3://b/w.bin")


def test_which_files_are_checked_range_by_range() -> None:
    parts = PartHashes(PART, ("0" * 64,) * 3)
    assert range_hashes(Expected("w", 3 * PART, "a" * 64, parts=parts), PART) is parts
    # One range fetches a small file whole: its sha256 is checked like a part, from memory.
    assert range_hashes(Expected("c", 100, "a" * 64), PART) == PartHashes(100, ("a" * 64,))
    assert range_hashes(Expected("w", 3 * PART, "a" * 64), PART) is None  # old manifest: hashed whole
    assert range_hashes(Expected("w", 100), PART) is None  # no manifest
    assert range_hashes(Expected("e", 0, "a" * 64), PART) is None  # empty: nothing to fetch
