"""The layering of the package, read from the source with ``ast`` (imports inside functions
count) and checked in a fresh interpreter.

- training, export and stream import core, never each other; core imports none of them.
- The streaming runtime (stream/**) and the runtime half of core import no torch, onnx or
  open_clip at module level (inside a function is fine: only the code that needs them
  pays for them), nor a core module that does.
- Importing the streaming pipeline, and running ``microgesture stream`` on a video, leave
  torch, onnx and open_clip out of ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import microgesture

ROOT = Path(microgesture.__file__).resolve().parent
LAYERS = ("training", "export", "stream")
HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "open_clip")

# Imports across layers that exist today and are being removed. Each is (importing module,
# imported module). The test fails on any import not listed here, and on a listed one that
# is gone (so the list only shrinks): empty it when the last one is removed.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

# The model half of core: modules that need torch by nature (they define nn.Modules or
# load torch checkpoints). Any other core module is runtime and must import without torch.
# A name ending in ".*" covers a package and everything in it.
TORCH_MODULES = {
    "core.models.*": "model families, one module each (nn.Modules)",
    "core.clip": "the CLIP towers (open_clip / nn.Module)",
    "core.clip_mg": "the CLIP-MG family built on the CLIP towers",
    "core.miga24": "the MiGA 2024 model (nn.Module)",
    "core.posec3d": "PoseC3D 3D CNN (nn.Module)",
    "core.vclip": "VCLIP temporal attention (nn.Module)",
    "core.checkpoint": "reads and writes torch checkpoints",
}


# --------------------------------------------------------------------------- reading imports

def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{"stream.sources.spec": path}`` for every module of core/training/export/stream."""
    out = {}
    for sub in ("core", *LAYERS):
        for path in sorted((root / sub).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, module_level: bool) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in the file; with ``module_level`` only
    those that run when the module is imported (not inside functions, not under
    ``if TYPE_CHECKING``). ``from microgesture import training`` gives ``microgesture.training``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if module_level and isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ["microgesture", *package[:len(package) - child.level + 1]]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "microgesture" or (child.level and not child.module):
                    found.extend((child.lineno, f"{target}.{a.name}") for a in child.names)
                else:
                    found.append((child.lineno, target))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def _ours(module: str) -> str | None:
    """``stream.sources`` for ``microgesture.stream.sources``; None for other packages."""
    return module[len("microgesture."):] if module.startswith("microgesture.") else None


def is_torch_module(name: str) -> bool:
    return any(name == key or (key.endswith(".*") and name.startswith(key[:-1]))
               for key in TORCH_MODULES)


def is_runtime(name: str) -> bool:
    return name.split(".")[0] == "stream" or (name.split(".")[0] == "core" and not is_torch_module(name))


# --------------------------------------------------------------------------- the rules

def layer_violations(root: Path = ROOT) -> set[tuple[str, str]]:
    """(importer, imported) pairs where a layer imports another (imports in functions too)."""
    bad = set()
    for name, path in modules(root).items():
        own = name.split(".")[0]
        for _, target in imports(name, path, module_level=False):
            ours = _ours(target)
            if ours is None:
                continue
            layer = ours.split(".")[0]
            if layer in LAYERS and layer != own:
                bad.add((name, ours))
    return bad


def heavy_violations(root: Path = ROOT) -> set[tuple[str, str]]:
    """(runtime module, what it imports at module level) for torch/onnx/open_clip and for
    core modules that need torch."""
    bad = set()
    for name, path in modules(root).items():
        if not is_runtime(name):
            continue
        for _, target in imports(name, path, module_level=True):
            ours = _ours(target)
            if target.split(".")[0] in HEAVY or (ours is not None and is_torch_module(ours)):
                bad.add((name, target))
    return bad


def test_training_export_and_stream_do_not_import_each_other():
    found = layer_violations()
    new = found - KNOWN_VIOLATIONS
    assert not new, ("imports across layers (training, export and stream import core only; move "
                     f"the shared code into core): {sorted(new)}")
    gone = KNOWN_VIOLATIONS - found
    assert not gone, f"fixed: remove these from KNOWN_VIOLATIONS: {sorted(gone)}"


def test_the_runtime_imports_no_torch_onnx_or_open_clip_at_module_level():
    bad = heavy_violations()
    assert not bad, ("the streaming runtime and the runtime half of core import these at module "
                     "level; import them inside the function that needs them, or (for a model "
                     f"module) list it in TORCH_MODULES with the reason: {sorted(bad)}")


def test_the_torch_list_names_modules_that_exist_and_need_torch():
    """So the exemption list cannot hide a runtime module: each entry is a module that imports
    torch (or another listed module) at module level."""
    found = modules()
    for key in TORCH_MODULES:
        matches = [n for n in found if n == key or (key.endswith(".*") and n.startswith(key[:-1]))]
        if key.endswith(".*"):
            continue   # a package that may not exist yet, or be empty
        assert matches, f"{key} is in TORCH_MODULES but there is no such module: remove it"
        targets = [t for _, t in imports(key, found[key], module_level=True)]
        assert any(t.split(".")[0] in HEAVY or is_torch_module(_ours(t) or "") for t in targets), (
            f"{key} imports no torch at module level: it belongs to the runtime half, remove it "
            "from TORCH_MODULES")


def test_the_checks_find_a_planted_violation(tmp_path):
    """The readers above see every kind of import the rules are about."""
    pkg = tmp_path / "microgesture"
    for sub in ("core", *LAYERS):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "stream" / "ok.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
        "def run():\n    import torch\n    from microgesture.core import clip\n")
    (pkg / "stream" / "uses_training.py").write_text(
        "def f():\n    from microgesture.training.synth import write_synthetic\n")
    (pkg / "export" / "rel.py").write_text("def f():\n    from ..stream import ok\n")
    (pkg / "training" / "pkg_form.py").write_text("from microgesture import export\n")
    (pkg / "core" / "runtime.py").write_text("try:\n    import onnx\nexcept ImportError:\n    pass\n")
    (pkg / "core" / "uses_model.py").write_text("from microgesture.core.models.clip_mg import FAMILY\n")
    (pkg / "stream" / "cls.py").write_text("class A:\n    import open_clip\n")
    (pkg / "core" / "clip.py").write_text("import torch\n")
    assert layer_violations(pkg) == {("stream.uses_training", "training.synth"),
                                     ("export.rel", "stream"),
                                     ("training.pkg_form", "export")}
    assert heavy_violations(pkg) == {("core.runtime", "onnx"),
                                     ("core.uses_model", "microgesture.core.models.clip_mg"),
                                     ("stream.cls", "open_clip")}


# --------------------------------------------------------------------------- at run time

_REPORT = ("import sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules "
           f"if m.split('.')[0] in {HEAVY!r}}})))")


def _heavy_after(code: str, timeout: float = 120) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code + "\n" + _REPORT], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_runtime_loads_no_torch():
    runtime = sorted(n for n in modules() if is_runtime(n))
    code = "import importlib\n" + "".join(f"importlib.import_module('microgesture.{n}')\n"
                                         for n in runtime)
    assert _heavy_after(code) == []


def test_microgesture_stream_on_a_video_loads_no_torch(tmp_path):
    """The whole ``microgesture stream`` path: the bundle's ONNX sessions, pose, windows."""
    video = tmp_path / "v.mp4"
    code = (
        "from microgesture.training.synth import make_long_video\n"
        f"make_long_video({str(video)!r}, duration_s=8, size=(96, 96), progress=False)\n"
        "from microgesture.cli import main\n"
        "from microgesture.core.paths import DEMO_BUNDLE\n"
        f"rc = main(['stream', '--bundle', str(DEMO_BUNDLE), '--source', {str(video)!r},\n"
        "            '--publish', 'tcp://127.0.0.1:*', '--max-frames', '20', '--quiet'])\n"
        "assert rc == 0, rc\n")
    assert _heavy_after(code, timeout=300) == []


@pytest.mark.parametrize("module", ["microgesture.stream.pipeline", "microgesture.stream.sources",
                                    "microgesture.cli"])
def test_importing_the_stream_entry_points_loads_no_torch(module):
    assert _heavy_after(f"import {module}") == []
