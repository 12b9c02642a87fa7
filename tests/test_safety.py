"""No unsafe deserialisation or dynamic code anywhere in the project's Python sources.

The check walks the syntax tree of every .py file under src/, stages/, benchmarks/ and tests/, so
``model.eval()`` (a method) is fine while the builtin ``eval(...)`` is not, and ``torch.load``
must pass ``weights_only=True`` literally.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("src", "stages", "benchmarks", "tests") for p in (REPO / d).rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    """'torch.load' for the call target ``torch.load``; '' when it is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """(line, reason) of every unsafe call in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("eval", "exec", "compile") and isinstance(node.func, ast.Name):
            found.append((node.lineno, f"builtin {name}()"))
        elif name.endswith("torch.load"):
            ok = any(
                kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            )
            if not ok:
                found.append((node.lineno, "torch.load without weights_only=True"))
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            found.append((node.lineno, f"{name} (use yaml.safe_load)"))
        elif name.startswith(("pickle.", "dill.", "marshal.")) and name.split(".")[-1] in ("load", "loads"):
            arg = node.args[0] if node.args else None
            if not (
                isinstance(arg, ast.Call) and _dotted(arg.func).endswith(".dumps")
            ):  # an in-memory round trip is fine
                found.append((node.lineno, f"{name} (unpickling data from outside)"))
        elif name in ("np.load", "numpy.load") and any(
            kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)
            for kw in node.keywords
        ):
            found.append((node.lineno, f"{name} with allow_pickle"))
    return found


def test_the_checker_finds_each_unsafe_call():
    bad = (
        "import torch, yaml, pickle, numpy as np\n"
        "torch.load('x')\n"
        "torch.load('x', weights_only=False)\n"
        "yaml.load(open('p'))\n"
        "pickle.load(open('p', 'rb'))\n"
        "eval('1')\n"
        "exec('x = 1')\n"
        "np.load('a.npy', allow_pickle=True)\n"
        "pickle.loads(blob)\n"
    )
    assert [line for line, _ in unsafe_calls(bad)] == [2, 3, 4, 5, 6, 7, 8, 9]
    good = "import torch, yaml\nm.eval()\ntorch.load('x', weights_only=True)\nyaml.safe_load('a: 1')\npickle.loads(pickle.dumps(m))\n"
    assert unsafe_calls(good) == []


def test_no_unsafe_calls_in_the_project():
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {why}" for path in SOURCES for line, why in unsafe_calls(path.read_text())
    ]
    assert len(SOURCES) > 50 and offenders == []
