"""The import rules of docs/architecture.md, checked by walking the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    """Module path -> the absolute names it imports (relative imports resolved)."""
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        module_parts = path.relative_to(ROOT).with_suffix("").parts
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module_parts[:len(module_parts) - node.level]
                    if path.name == "__init__.py":
                        base = module_parts[:len(module_parts) - node.level + 1]
                    names.add(".".join((*base, node.module or "")).strip("."))
                else:
                    names.add(node.module or "")
        out[str(path.relative_to(ROOT))] = names
    return out


# docs/architecture.md, "Import rules": package -> the project's modules it may import.
ALLOWED = {
    "service.pipeline": ("service.pipeline", "service.errors"),
    "service.dicom": ("service.dicom", "service.pipeline", "service.errors", "service"),
    "service.store": ("service.store", "service.errors"),
    "service.viewer": ("service.viewer", "service.dicom", "service.errors", "service"),
    "service.analysis": ("service.pipeline", "service.dicom", "service.store", "service.config",
                         "service.errors", "service.encoding"),
    "service.encoding": ("service.pipeline", "service.dicom", "service.store", "service.errors"),
    "service.pacs": ("service.pacs", "service.pipeline", "service.dicom", "service.store",
                     "service.analysis", "service.encoding", "service.config", "service.errors"),
    "service.batch": ("service.batch", "service.analysis", "service.encoding", "service.pipeline",
                      "service.dicom",
                      "service.pacs", "service.store", "service.config", "service.errors",
                      "service"),
    "training": ("training", "service.pipeline", "service.viewer", "service"),
}


def _module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, allowed: tuple[str, ...]) -> bool:
    # "service" alone allows the package root (its version), not everything under it.
    return any(name == a or (a != "service" and name.startswith(a + ".")) for a in allowed)


def test_each_part_imports_only_what_docs_architecture_allows() -> None:
    imports = {**_imports("service"), **_imports("training")}
    checked = 0
    for path, names in imports.items():
        module = _module_name(path)
        rule = next((p for p in ALLOWED if module == p or module.startswith(p + ".")), None)
        if rule is None:
            continue
        checked += 1
        ours = {n for n in names if n.split(".")[0] in ("service", "training")}
        bad = {n for n in ours if not _within(n, ALLOWED[rule])}
        assert not bad, (module, sorted(bad))
    assert checked > 40  # the walk still finds the modules


def test_only_the_entry_point_imports_the_api() -> None:
    for path, names in _imports("service").items():
        module = _module_name(path)
        if module.startswith("service.api") or module == "service.__main__":
            continue
        assert not {n for n in names if n.startswith("service.api")}, module


def test_the_tree_names_its_parts_and_the_tests_mirror_it() -> None:
    parts = sorted(p.parent.name for p in (ROOT / "service").glob("*/__init__.py"))
    assert parts == ["api", "batch", "dicom", "pacs", "pipeline", "store", "viewer"]
    for part in parts:
        doc = ast.get_docstring(ast.parse((ROOT / "service" / part / "__init__.py").read_text()))
        assert doc and "import" in doc, part  # what it owns and what it may import
        assert list((ROOT / "tests" / "service" / part).glob("test_*.py")), part
    assert sorted(p.parent.name for p in (ROOT / "training").glob("*/__init__.py")) == \
        ["data", "evaluation", "nets", "studies"]
    for folder in (ROOT / "tests").rglob("test_*.py"):
        relative = folder.parent.relative_to(ROOT / "tests")
        assert relative == Path(".") or (ROOT / relative).is_dir(), relative


def test_the_service_never_imports_tensorflow_or_training() -> None:
    imports = _imports("service")
    assert len(imports) > 20
    for module, names in imports.items():
        bad = {n for n in names if n.split(".")[0] in ("tensorflow", "keras", "tf2onnx",
                                                       "training")}
        assert not bad, (module, bad)
