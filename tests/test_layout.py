"""The repository keeps its promises: layout, import rules, docs and CI in step with the code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import build_addon
from blender_dreamfusion.shared import MESSAGE_TYPES, PROTOCOL_ERRORS, jobspec_knobs

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_THIRD_PARTY = {"numpy", "zmq"}
PACKAGE = "blender_dreamfusion"
#: Folders whose README.md says in a line what lives there (docs/ARCHITECTURE.md says the rest).
FOLDERS_WITH_README = ("backend", "backend/geometry", "backend/guidance", "backend/server", "backend/toy", "shared",
                       "blender_addon", "blender_addon/addon_core", "tests", "tests/helpers", "tests/real_blender",
                       "bench", "scripts", "docs")
#: The add-on: its own modules use bpy (the thin layer); what it runs besides is in shared/ or addon_core/.
ADDON_LAYER = ROOT / "blender_addon"


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str | None, list[str], int]]:
    """(level, module, imported names, line) for every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((0, a.name, [], node.lineno) for a in node.names)
    return found


def _shared_exports() -> dict[str, str]:
    """Name -> the shared module that defines it, for what `shared/__init__.py` re-exports."""
    exports = {}
    for level, module, names, _ in _imports(ROOT / "shared" / "__init__.py"):
        if level == 1 and module:
            exports.update({name: module for name in names})
    return exports


def _shared_modules_named(level: int, module: str | None, names: list[str], anchor: str) -> set[str]:
    """The shared/ modules one import statement reaches; `anchor` is how the importer spells the package."""
    if level == 0:
        prefix = f"{PACKAGE}.shared"
        if module is None or not (module == prefix or module.startswith(prefix + ".")):
            return set()
        rest = module[len(prefix) + 1:]
    else:
        if module is None or not (module == anchor or module.startswith(anchor + ".")):
            return set()
        rest = module[len(anchor) + 1:]
    if rest:
        return {rest.split(".")[0]}
    exports = _shared_exports()
    return {exports.get(name, name) for name in names}


def _closure(modules: set[str]) -> set[str]:
    """Add what those shared modules import from each other."""
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        if name in seen or not (ROOT / "shared" / f"{name}.py").is_file():
            continue
        seen.add(name)
        for level, module, names, _ in _imports(ROOT / "shared" / f"{name}.py"):
            if level == 1:
                todo.extend([module.split(".")[0]] if module else names)
    return seen


def _shared_used_by_backend() -> set[str]:
    direct = set()
    for path in _python_files("backend"):
        for level, module, names, _ in _imports(path):
            direct |= _shared_modules_named(level, module, names, anchor="")
    return _closure(direct)


def _shared_used_by_addon() -> set[str]:
    direct = set()
    for path in _python_files("blender_addon"):
        # The add-on reaches the vendored protocol as `.shared` (its own modules) or `..shared` (addon_core).
        depth = len(path.relative_to(ADDON_LAYER).parts)
        for level, module, names, _ in _imports(path):
            if level == depth:
                direct |= _shared_modules_named(1, module, names, anchor="shared")
    return _closure(direct)


def test_layout_exists():
    for name in ("blender_addon", "blender_addon/addon_core", "backend", "shared", "tests", "tests/helpers", "bench",
                 "build_addon.py", "pyproject.toml", "README.md", "PROTOCOL.md", "docs/ARCHITECTURE.md", ".ci/run",
                 "blender_addon/blender_manifest.toml"):
        assert (ROOT / name).exists(), name


def test_shared_holds_only_what_both_sides_import():
    backend, addon = _shared_used_by_backend(), _shared_used_by_addon()
    modules = {p.stem for p in (ROOT / "shared").glob("*.py") if p.stem != "__init__"}
    assert backend and addon
    assert modules - backend == set(), f"shared/ modules the backend never imports: {sorted(modules - backend)}"
    assert modules - addon == set(), f"shared/ modules the add-on never imports: {sorted(modules - addon)}"
    # And the walk is not vacuous: the add-on's own logic really is outside shared/.
    assert "job_tracker" not in modules and (ROOT / "blender_addon/addon_core/job_tracker.py").is_file()


def test_each_side_imports_only_what_it_may():
    for path in _python_files("backend"):
        for level, module, _, line in _imports(path):
            if level == 0 and module:
                assert not module.startswith(f"{PACKAGE}.addon_core"), f"{path.name}:{line} imports {module}"
    for path in _python_files("shared", "blender_addon/addon_core"):
        for level, module, _, line in _imports(path):
            if level == 0:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, \
                    f"{path.relative_to(ROOT)}:{line} imports {module}: only the standard library, numpy and zmq " \
                    "(relative imports only, since build_addon.py vendors these under another package name)"
            elif path.parent.name == "shared":
                assert level == 1, f"{path.name}:{line}: shared/ reaches nothing outside itself"
            else:
                assert level == 1 or (module or "").split(".")[0] == "shared", \
                    f"{path.name}:{line}: addon_core reaches only itself and ..shared"


def test_nothing_imports_the_folders_by_their_bare_names():
    # From the repository root `backend` or `shared` would import (pytest puts the root on sys.path), and an
    # installed wheel has no such packages: the one spelling that works everywhere is blender_dreamfusion.X.
    bare = {"backend", "shared", "addon_core"}
    every = _python_files("backend", "shared", "blender_addon", "tests", "bench", "scripts") + [ROOT / "build_addon.py"]
    for path in every:
        for level, module, _, line in _imports(path):
            if level == 0 and module:
                assert module.split(".")[0] not in bare, f"{path.relative_to(ROOT)}:{line} imports {module}"
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"-m (backend|shared)\.", text), f"{path.relative_to(ROOT)} runs a bare module"


def test_the_pure_packages_import_without_bpy_torch_or_the_backend(tmp_path):
    blocked = ("torch", "bpy", "gpu", "gpu_extras", "diffusers", "transformers", "mcubes",
               "blender_dreamfusion.backend")
    pure = sorted(p.stem for p in (ROOT / "blender_addon/addon_core").glob("*.py") if p.stem != "__init__")
    shared = sorted(p.stem for p in (ROOT / "shared").glob("*.py") if p.stem != "__init__")
    # Installed: blender_dreamfusion.addon_core and .shared.
    installed = (f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\nimport importlib\n"
                 f"for m in {pure!r}:\n    importlib.import_module('{PACKAGE}.addon_core.' + m)\n"
                 f"for m in {shared!r}:\n    importlib.import_module('{PACKAGE}.shared.' + m)\n"
                 f"print(sys.modules['{PACKAGE}.shared'].PROTOCOL_TAG)")
    out = subprocess.run([sys.executable, "-c", installed], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "dreamfusion/1" in out.stdout, out.stderr
    # Vendored in the built extension: `dreamfusion.addon_core` needs no Blender either.
    build_addon.assemble(tmp_path / "dreamfusion")
    vendored = (f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\nimport importlib\n"
                f"for m in {pure!r}:\n    importlib.import_module('dreamfusion.addon_core.' + m)\n"
                "import dreamfusion\nassert 'dreamfusion.panel' not in sys.modules\n"
                "print(dreamfusion.addon_core.job_tracker.__file__)")
    out = subprocess.run([sys.executable, "-c", vendored], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and str(tmp_path) in out.stdout, out.stderr


def test_every_folder_says_what_it_holds_and_the_design_is_in_the_repository():
    for folder in FOLDERS_WITH_README:
        readme = ROOT / folder / "README.md"
        assert readme.is_file(), f"{folder}/ has no README.md"
        assert readme.read_text(encoding="utf-8").strip(), f"{folder}/README.md is empty"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/ARCHITECTURE.md" in readme
    architecture = (ROOT / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")
    for section in ("## The parts", "## Data flow of one job", "## Conventions", "## How to add"):
        assert section in architecture, section
    # Every path the architecture names exists (a stale doc is worse than none).
    for path in sorted(set(re.findall(r"`((?:backend|shared|blender_addon|tests|bench|scripts|docs)/[\w/.]*)`",
                                      architecture))):
        assert (ROOT / path.rstrip("/")).exists(), f"docs/ARCHITECTURE.md names {path}, which does not exist"
    # Nothing points at a design document outside the repository.
    for path in _python_files("backend", "shared", "blender_addon", "tests", "bench", "scripts"):
        if path != Path(__file__).resolve():
            assert "DESIGN.md" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)


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


def test_job_state_names_are_written_in_one_module():
    """shared/states.py names a job's states; product code uses its names and sets, never the words. (A job's
    phase "queued" and the message types are other vocabularies.)"""
    import re

    word = re.compile(r"[\"'](queued|running|finished|failed|cancelled|interrupted|damaged)[\"']")
    found = []
    for folder in ("backend", "shared", "blender_addon"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "shared/states.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if word.search(code) and "phase" not in code.lower() and "TYPE = " not in code:
                    found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_every_how_to_add_recipe_names_only_what_the_code_defines():
    """Each name a "How to add" recipe tells a contributor to use (a class, function, field, constant) is defined
    in the code, so a rename that forgets the recipe fails here, as a moved file fails the path check above."""
    import re

    architecture = (ROOT / "docs/ARCHITECTURE.md").read_text(encoding="utf-8")
    recipes = architecture.split("## How to add", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(path.read_text(encoding="utf-8")
                     for path in _python_files("backend", "shared", "blender_addon", "tests", "bench", "scripts"))
    missing = []
    for token in sorted(set(re.findall(r"`([^`\n]+)`", recipes))):
        named = re.match(r"([A-Za-z_][\w.]*)(\(.*\))?$", token)
        if named is None or "/" in token or token.endswith((".py", ".md", ".json")):
            continue  # a value, an expression, a command or a path (the check above)
        name = named[1].rsplit(".", 1)[-1]
        defined = rf"(def|class) {name}\b|^\s*{name}\s*(:|=)|\b{name}: |\b{name}=|[\"']{name}[\"']"
        if not re.search(defined, code, re.MULTILINE):
            missing.append(token)
    assert not missing, f"docs/ARCHITECTURE.md's recipes name what the code does not define: {missing}"
