"""The repository keeps its promises: layout, import rules, docs and CI in step with the code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from blender_dreamfusion.shared import MESSAGE_TYPES, PROTOCOL_ERRORS, jobspec_knobs

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_THIRD_PARTY = {"numpy", "zmq"}


def test_layout_exists():
    for name in ("blender_addon", "backend", "shared", "tests", "bench", "build_addon.py", "pyproject.toml",
                 "README.md", "PROTOCOL.md", ".ci/run", "blender_addon/blender_manifest.toml"):
        assert (ROOT / name).exists(), name


def test_shared_imports_without_torch_or_bpy():
    blocked = "import sys\nfor m in ('torch', 'bpy', 'diffusers', 'transformers', 'mcubes', 'backend'):\n" \
              "    sys.modules[m] = None\nimport shared, shared.transport, shared.spec_args, shared.client\nprint(shared.PROTOCOL_TAG)"
    out = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "dreamfusion/1" in out.stdout


def test_shared_uses_relative_imports_and_only_stdlib_numpy_zmq():
    # build_addon.py vendors shared/ into the add-on under another package name.
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, \
                    f"{path.name}:{node.lineno} imports {name}"


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#") and not line.startswith(("set ", "cd "))]
    exports = [line for line in lines if line.startswith("export ")]
    ci_lines = [line for line in lines if line not in exports]
    assert len(ci_lines) == 1, ci_lines
    readme = (ROOT / "README.md").read_text()
    assert ci_lines[0].strip() in [line.strip() for line in readme.splitlines()]
    for line in exports:  # CI may only tighten the run (e.g. turn skips into failures), and the README says how
        assert line.split()[1].split("=")[0] in readme, line


def test_protocol_doc_covers_every_type_error_code_and_spec_field():
    doc = (ROOT / "PROTOCOL.md").read_text()
    for name in MESSAGE_TYPES:
        assert f"`{name}`" in doc, f"PROTOCOL.md does not document message type {name}"
    for code in PROTOCOL_ERRORS:
        assert f"`{code}`" in doc, f"PROTOCOL.md does not document error code {code}"
    for field in jobspec_knobs():
        assert f"`{field}`" in doc, f"PROTOCOL.md does not document JobSpec field {field}"


def test_protocol_doc_tables_match_the_code():
    from tests.helpers.protocol_doc import render

    doc = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    assert render(doc) == doc, "PROTOCOL.md is stale: run `python -m tests.helpers.protocol_doc --write`"
