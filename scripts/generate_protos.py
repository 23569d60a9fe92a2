"""Regenerate the checked-in Python code of the autoglm.v1 protos.

Usage: python scripts/generate_protos.py [OUTPUT_ROOT]

OUTPUT_ROOT defaults to client/ so the code lands in client/autoglm_client/v1/.
The proto package autoglm.v1 is mapped onto the Python package autoglm_client.v1
by generating from a temporary tree whose layout is autoglm_client/v1/*.proto,
so the generated imports are right without patching them afterwards.

The generator is the grpcio-tools that requirements/dev.lock pins (its version is written into the
stubs): any other version is refused, so that regenerating gives byte-identical files on every
machine and tests/unit/test_generated_code.py guards only real drift between protos and stubs.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos" / "autoglm" / "v1"
PYTHON_PACKAGE = Path("autoglm_client") / "v1"
LOCK = REPO_ROOT / "requirements" / "dev.lock"


def check_generator_is_locked() -> None:
    """Refuse to generate with a grpcio-tools other than the locked one."""
    match = re.search(r"^grpcio-tools==(\S+)", LOCK.read_text(encoding="utf-8"), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{LOCK} pins no grpcio-tools")
    installed = metadata.version("grpcio-tools")
    if installed != match.group(1):
        raise SystemExit(
            f"grpcio-tools {installed} is installed but {LOCK.name} pins {match.group(1)}: run `make install`"
            " (or `make upgrade` to move the lock) before regenerating"
        )


def generate(output_root: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py into output_root/autoglm_client/v1."""
    check_generator_is_locked()
    target = output_root / PYTHON_PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as staging_name:
        staging = Path(staging_name)
        (staging / PYTHON_PACKAGE).mkdir(parents=True)
        protos = []
        for source in sorted(PROTO_DIR.glob("*.proto")):
            text = source.read_text(encoding="utf-8")
            staged = staging / PYTHON_PACKAGE / source.name
            staged.write_text(text, encoding="utf-8")
            protos.append(str(PYTHON_PACKAGE / source.name))
        args = [
            "grpc_tools.protoc",
            f"-I{staging}",
            f"-I{well_known}",
            f"--python_out={output_root}",
            f"--pyi_out={output_root}",
            f"--grpc_python_out={output_root}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    return sorted(p for p in target.iterdir() if p.name.endswith((".py", ".pyi")) and "_pb2" in p.name)


def main() -> None:
    output_root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "client"
    for path in generate(output_root):
        print(path)
    init = output_root / PYTHON_PACKAGE / "__init__.py"
    if not init.exists():
        shutil.copyfile(REPO_ROOT / "client" / PYTHON_PACKAGE / "__init__.py", init)


if __name__ == "__main__":
    main()
