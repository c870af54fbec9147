"""Import generated modules from files or text, as the tests need them side by side."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from qsse_codegen import generate

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "codegen" / "cases"


def load_file(path: Path, name: str) -> types.ModuleType:
    # Registered in sys.modules: msgspec resolves the Structs' annotations through it.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_source(toml: str, name: str) -> types.ModuleType:
    _, text = generate(toml, f"{name}.toml")
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(text, f"<{name}>", "exec"), module.__dict__)
    return module
