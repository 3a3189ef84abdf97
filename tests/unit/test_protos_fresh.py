"""The committed generated protobuf code in sidecar/v1/ matches what scripts/genproto.py makes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "scripts" / "genproto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["genproto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = _load_generator()
    generated = generator.generate(tmp_path)  # type: ignore[attr-defined]
    committed_dir = ROOT / "sidecar" / "v1"
    fresh = {p.name: p.read_bytes() for p in generated}
    committed = {p.name: p.read_bytes() for p in committed_dir.iterdir() if p.is_file()}
    protos = _protos()
    # an empty generation or an empty folder would compare equal: pin what must be there
    expected = {f"{proto.stem}{suffix}" for proto in protos
                for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")}
    assert expected <= set(fresh), f"the generator did not produce {sorted(expected - set(fresh))}"
    assert all(fresh[name] for name in expected), "the generator wrote an empty module"
    stale = sorted(name for name in fresh if committed.get(name) != fresh[name])
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, (
        f"sidecar/v1 is stale (differs: {stale}, not generated: {extra}); "
        "run `make protos` and commit the result"
    )


def _protos() -> list[Path]:
    protos = sorted((ROOT / "protos" / "sidecar" / "v1").glob("*.proto"))
    assert {p.name for p in protos} >= {"admin.proto", "eventlog.proto", "events.proto"}, protos
    return protos


def test_every_proto_has_generated_modules() -> None:
    for proto in _protos():
        assert (ROOT / "sidecar" / "v1" / f"{proto.stem}_pb2.py").exists(), proto.name
