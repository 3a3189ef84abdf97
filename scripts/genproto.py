"""Regenerate the Python code for protos/ into sidecar/v1/ (the one place it lives).

Usage: python scripts/genproto.py [--out DIR]

protos/sidecar/v1/x.proto becomes sidecar/v1/x_pb2.py (+ _pb2_grpc.py, .pyi), so the
generated imports (`from sidecar.v1 import events_pb2`) resolve inside our package.
tests/unit/test_protos_fresh.py regenerates into a temp dir and fails when the committed
code differs.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto under protos/ and write the outputs below out_dir."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    pkg = out_dir / "sidecar" / "v1"
    (pkg / "__init__.py").write_text('"""Generated protobuf code: run scripts/genproto.py."""\n')
    return sorted(pkg.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repo)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
