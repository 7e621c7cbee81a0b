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


def test_the_service_never_imports_tensorflow_or_training() -> None:
    imports = _imports("service")
    assert len(imports) > 20
    for module, names in imports.items():
        bad = {n for n in names if n.split(".")[0] in ("tensorflow", "keras", "tf2onnx",
                                                       "training")}
        assert not bad, (module, bad)


def test_training_reaches_into_the_service_only_for_the_pipeline() -> None:
    # The shared pipeline (preprocessing, inference, masks, measures) and the registry.
    allowed = {"service", "service.pipeline.preprocess", "service.pipeline.infer", "service.pipeline.segment",
               "service.pipeline.postprocess", "service.pipeline.quantify", "service.pipeline.contrast",
               "service.pipeline.acceptance", "service.pipeline.uncertainty", "service.pipeline.registry",
               "service.analysis"}
    for module, names in _imports("training").items():
        used = {n for n in names if n.split(".")[0] == "service"}
        assert used <= allowed, (module, used - allowed)
