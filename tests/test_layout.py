"""The shape of the code, as the redesign (issue 20) left it: checks that each can fail.

* no control characters but newline in any source (a ``\\t`` or ``\\f`` in a non-raw
  docstring is how TABs and form feeds got into train.py);
* verification imports torch_svm, never the reverse, except in torch_svm/cli (which composes
  both, and imports verification only when a command runs, never to build the parser);
* a small public surface: all ``__all__`` lists together name at most 100 names;
* the kinks command's written-out preset sizes are the study's.
"""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "torch_svm").rglob("*.py")) + sorted((ROOT / "verification").rglob("*.py"))
CONTROL = {chr(c) for c in range(32) if c != 10} | {"\x7f"}


def _control_lines(text: str):
    return [n for n, line in enumerate(text.split("\n"), 1) if CONTROL & set(line)]


def test_no_control_characters_in_sources():
    assert SOURCES
    bad = {str(p.relative_to(ROOT)): _control_lines(p.read_text()) for p in SOURCES}
    assert {k: v for k, v in bad.items() if v} == {}
    assert _control_lines('"""a \t tilde and a \f rac"""') == [1]      # the check can see one


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node


def _upward(path: Path):
    return [m for m, _ in _imports(path) if m.split(".")[0] == "verification"]


def test_the_library_never_imports_verification_outside_the_cli():
    library = [p for p in SOURCES if p.parts[-2] != "cli" and "torch_svm" in p.parts]
    assert {str(p.relative_to(ROOT)): _upward(p) for p in library if _upward(p)} == {}
    assert _upward(ROOT / "torch_svm" / "cli" / "verify.py")         # the scan sees imports


def test_the_cli_imports_verification_only_inside_functions():
    for path in sorted((ROOT / "torch_svm" / "cli").glob("*.py")):
        top = [n for n in ast.parse(path.read_text()).body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [getattr(n, "module", None) or n.names[0].name for n in top]
        assert not [m for m in names if m.startswith("verification")], path


def test_building_every_parser_imports_no_verification_module():
    code = ("import sys; from torch_svm.cli import build_parser; p = build_parser(); "
            "p.format_help(); print(sorted(m for m in sys.modules if m.startswith('verification')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_public_surface_is_small():
    names = {}
    for path in SOURCES:
        for node in ast.parse(path.read_text()).body:
            targets = [t.id for t in getattr(node, "targets", [getattr(node, "target", None)])
                       if isinstance(t, ast.Name)]
            if "__all__" in targets and isinstance(node.value, (ast.List, ast.Tuple)):
                names[str(path.relative_to(ROOT))] = len(node.value.elts)
    assert names["torch_svm/__init__.py"] >= 5                       # the scan reads lists
    assert sum(names.values()) <= 100, names


def test_kinks_help_states_the_study_presets():
    from torch_svm.cli.kinks import PRESET_SIZES, preset_sizes
    from verification.study.run import DRY_RUN, QUICK, StudyConfig

    full = dataclasses.asdict(StudyConfig())
    assert PRESET_SIZES == {"full": preset_sizes(full), "quick": preset_sizes({**full, **QUICK}),
                            "dry_run": preset_sizes({**full, **DRY_RUN})}
