"""The declared floors of grpcio and protobuf are what the checked-in stubs demand at import.

generation_pb2_grpc.py refuses to import under a grpcio older than GRPC_GENERATED_VERSION, and
generation_pb2.py asks protobuf's runtime for at least the version of the protoc that wrote it. A
floor below either lets pip install an SDK that fails at `import autoglm_client`.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "client" / "autoglm_client" / "v1"
PYPROJECTS = [ROOT / "client" / "pyproject.toml", ROOT / "pyproject.toml"]


def grpcio_required_by_stubs() -> Version:
    tree = ast.parse((STUBS / "generation_pb2_grpc.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "GRPC_GENERATED_VERSION" for t in node.targets
        ):
            return Version(ast.literal_eval(node.value))
    raise AssertionError("generation_pb2_grpc.py has no GRPC_GENERATED_VERSION")


def protobuf_required_by_stubs() -> Version:
    tree = ast.parse((STUBS / "generation_pb2.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "ValidateProtobufRuntimeVersion"
        ):
            major, minor, patch = (ast.literal_eval(arg) for arg in node.args[1:4])
            return Version(f"{major}.{minor}.{patch}")
    raise AssertionError("generation_pb2.py has no ValidateProtobufRuntimeVersion call")


def declared_floor(dependencies: list[str], name: str) -> Version | None:
    """The lowest version the specifier of `name` admits (None when unbounded below)."""
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name == name:
            floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
            return max(floors) if floors else None
    raise AssertionError(f"{name} is not declared")


def floor_problems(pyproject_text: str, required: dict[str, Version]) -> list[str]:
    dependencies = tomllib.loads(pyproject_text)["project"]["dependencies"]
    problems = []
    for name, version in required.items():
        floor = declared_floor(dependencies, name)
        if floor is None or floor < version:
            problems.append(f"{name} floor {floor} is below {version}, which the stubs require")
    return problems


@pytest.fixture(scope="module")
def required() -> dict[str, Version]:
    return {"grpcio": grpcio_required_by_stubs(), "protobuf": protobuf_required_by_stubs()}


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_declared_floors_cover_the_stubs(pyproject: Path, required: dict[str, Version]) -> None:
    assert floor_problems(pyproject.read_text(), required) == []


@pytest.mark.parametrize("name", ["grpcio", "protobuf"])
def test_a_floor_lowered_below_the_stubs_is_caught(name: str, required: dict[str, Version]) -> None:
    text = (ROOT / "client" / "pyproject.toml").read_text()
    lowered = Version(f"{required[name].major}.0")
    dependencies = tomllib.loads(text)["project"]["dependencies"]
    line = next(d for d in dependencies if Requirement(d).name == name)
    broken = text.replace(f'"{line}"', f'"{name}>={lowered},<{required[name].major + 1}"')
    assert broken != text
    assert floor_problems(broken, required) == [
        f"{name} floor {lowered} is below {required[name]}, which the stubs require"
    ]


def test_the_stubs_import_under_the_locked_runtime(required: dict[str, Version]) -> None:
    """The lock installs runtimes at or above what the stubs ask for (the import itself would fail)."""
    import grpc
    from google.protobuf import __version__ as protobuf_version

    from autoglm_client.v1 import generation_pb2, generation_pb2_grpc  # noqa: F401

    assert Version(grpc.__version__) >= required["grpcio"]
    assert Version(protobuf_version) >= required["protobuf"]
