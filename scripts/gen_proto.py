"""Regenerate the committed gRPC stubs from proto/ (run via `make proto`).

protoc writes imports as ``from creditshare.v1 import ...`` (the proto package);
the stubs live under ``creditshare.proto`` so those imports are rewritten here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "creditshare" / "proto"


def main() -> int:
    target = OUT_DIR / "creditshare"
    if target.exists():
        shutil.rmtree(target)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        f"--mypy_out={OUT_DIR}",
        f"--mypy_grpc_out={OUT_DIR}",
        *protos,
    ]
    subprocess.run(cmd, check=True)
    for path in target.rglob("*.py*"):
        text = path.read_text()
        fixed = re.sub(
            r"^from creditshare\.v1 import",
            "from creditshare.proto.creditshare.v1 import",
            text,
            flags=re.M,
        )
        path.write_text(fixed)
    for folder in [target, *[p for p in target.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    print(f"generated {len(protos)} proto file(s) into {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
