"""Regenerate the checked-in Python code of the autoglm.v1 protos.

Usage: python scripts/generate_protos.py [OUTPUT_ROOT]

OUTPUT_ROOT defaults to client/ so the code lands in client/autoglm_client/v1/.
The proto package autoglm.v1 is mapped onto the Python package autoglm_client.v1
by generating from a temporary tree whose layout is autoglm_client/v1/*.proto,
so the generated imports are right without patching them afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos" / "autoglm" / "v1"
PYTHON_PACKAGE = Path("autoglm_client") / "v1"


def generate(output_root: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py into output_root/autoglm_client/v1."""
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
