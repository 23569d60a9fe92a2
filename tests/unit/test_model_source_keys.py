"""Keys and URIs that would leave the cache directory, checked without a server.

A real S3 (AWS) stores keys such as `v1/../../x`; SeaweedFS refuses to, so the integration tests
cannot list one: the parsing is checked here directly.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from autoglm_server.model_source.errors import InvalidModelUri
from autoglm_server.model_source.manifest import parse_manifest
from autoglm_server.model_source.uri import parse_s3_uri, relative_key


@pytest.mark.parametrize(
    "key", ["m/v1/../../etc/passwd", "m/v1//etc/passwd", "m/v1/./x", "m/v1/a\\..\\b", "m/v1/", "m/v10/x", "other"]
)
def test_keys_that_escape_or_lie_outside_are_refused(key: str) -> None:
    with pytest.raises(InvalidModelUri):
        relative_key(parse_s3_uri("s3://models/m/v1"), key)


def test_a_plain_key_becomes_a_relative_path() -> None:
    assert relative_key(parse_s3_uri("s3://models/m/v1/"), "m/v1/sub/model.safetensors") == PurePosixPath(
        "sub/model.safetensors"
    )


@pytest.mark.parametrize(
    "uri", ["s3://Models/x", "s3://a/x", "s3://user:pw@bucket/x", "s3://bucket:9000/x", "http://b/x"]
)
def test_bad_uris_are_refused_without_echoing_credentials(uri: str) -> None:
    with pytest.raises(InvalidModelUri) as caught:
        parse_s3_uri(uri)
    assert "pw@" not in str(caught.value)


def test_a_manifest_path_that_escapes_is_refused() -> None:
    raw = (
        b'{"format": "autoglm-model-manifest/1", "files": [{"path": "../x", "size": 1, "sha256": "'
        + b"0" * 64
        + b'"}]}'
    )
    with pytest.raises(InvalidModelUri):
        parse_manifest(raw, where="s3://b/m")
