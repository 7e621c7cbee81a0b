"""Figures in documents are the ones their results files hold (generated blocks)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from training.generated import read_block, write_block
from training.studies.contrast_groups import markdown as contrast_groups_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_write_block_replaces_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nbefore\n")
    write_block(doc, "table", "| a |\n")
    assert read_block(doc, "table") == "| a |"
    doc.write_text(doc.read_text() + "\nafter\n")
    write_block(doc, "table", "| b |")
    text = doc.read_text()
    assert read_block(doc, "table") == "| b |" and "| a |" not in text
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\nafter\n")
    assert read_block(doc, "other") is None


def test_the_contrast_table_in_the_training_docs_is_its_results_file() -> None:
    results = json.loads((ROOT / "models" / "evaluation" / "contrast_groups.json").read_text())
    block = read_block(ROOT / "docs" / "training.md", "contrast_groups")
    assert block == contrast_groups_markdown(results["rows"])


def test_the_readmes_accuracy_table_is_the_releases_results_file() -> None:
    from training.evaluation.report import accuracy_table

    summaries = json.loads((ROOT / "models" / "evaluation" / "summary.json").read_text())
    assert set(summaries) == {"phantoms", "emidec", "emidec-dark"}
    assert read_block(ROOT / "README.md", "accuracy") == accuracy_table(summaries)


def test_the_readme_stays_short_and_its_links_resolve() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    for doc in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), (doc.name, target)


def test_the_latency_section_is_its_results_file() -> None:
    record = json.loads((ROOT / "benchmarks" / "results" / "latency.json").read_text())
    block = read_block(ROOT / "BENCHMARKS.md", "latency")
    assert block is not None and f"({record['date'][:10]})" in block
    for pipeline, r in record["results"].items():
        assert f"| {pipeline} | {r['p50_ms']:.0f} | " in block, pipeline
        assert f" | {r['p95_ms']:.0f} | {r['first_request_ms']:.0f} (" in block, pipeline


def test_the_memory_bounds_hold_and_their_table_is_the_results_file() -> None:
    record = json.loads((ROOT / "benchmarks" / "results" / "service_load.json").read_text())
    block = read_block(ROOT / "BENCHMARKS.md", "service-load")
    assert record["within_bounds"] == {key: True for key in record["bounds_mib"]}
    for key in ("largest_request", "largest_series"):
        row = record[key]
        assert f"| {row['peak_rss_mib']:.0f} | {record['bounds_mib'][key]} | yes |" in block
    # The largest request was streamed and refused at the pixel limit, not analysed whole.
    assert record["largest_request"]["code"] == "series_too_large"
    assert record["largest_series"]["status"] == 201


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    from service.config import Settings

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):text.index("## How accurate it is")]
    documented = set(re.findall(r"`([A-Z_]+)`", section))
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, sorted(missing)


def test_the_round4_legs_table_in_the_experiments_is_the_kept_legs() -> None:
    from training.fold_legs import legs_block, plan
    from training.run import CONFIGS, task_config

    block = read_block(ROOT / "docs" / "experiments.md", "round4-legs")
    assert block is not None
    expected = legs_block(plan({task: task_config(task) for task in CONFIGS}))
    assert block == expected, "run python -m training.fold_legs --write docs/experiments.md"


def test_the_gate_study_tables_in_the_experiments_are_its_results() -> None:
    from training.studies.gate_flag_study import docs_block

    block = read_block(ROOT / "docs" / "experiments.md", "gate-flag-study")
    result = json.loads((ROOT / "docs" / "results" / "gate_flag_study.json").read_text())
    assert block == docs_block(result), ("run python -m training.studies.gate_flag_study "
                                         "--emidec ... --docs-only")


def test_the_oof_interval_tables_in_the_experiments_are_its_results() -> None:
    from training.studies.oof_interval_study import docs_block

    block = read_block(ROOT / "docs" / "experiments.md", "oof-interval-study")
    result = json.loads((ROOT / "docs" / "results" / "oof_interval_study.json").read_text())
    assert block == docs_block(result), ("run python -m training.studies.oof_interval_study "
                                         "--docs-only")


def test_the_box_stage_table_in_the_experiments_is_its_results() -> None:
    from training.studies.box_stage_study import docs_block

    block = read_block(ROOT / "docs" / "experiments.md", "box-stage-study")
    result = json.loads((ROOT / "docs" / "results" / "box_stage_study.json").read_text())
    assert block == docs_block(result), ("run python -m training.studies.box_stage_study "
                                         "--docs-only")


def test_the_enet_ring_table_in_the_experiments_is_its_results() -> None:
    from training.studies.enet_ring_study import docs_block

    block = read_block(ROOT / "docs" / "experiments.md", "enet-ring-study")
    result = json.loads((ROOT / "docs" / "results" / "enet_ring_study.json").read_text())
    assert block == docs_block(result), "run python -m training.studies.enet_ring_study"


def test_the_patch_gate_table_in_the_experiments_is_its_results() -> None:
    from training.studies.patch_gate_study import docs_block

    block = read_block(ROOT / "docs" / "experiments.md", "patch-gate-study")
    result = json.loads((ROOT / "docs" / "results" / "patch_gate_study.json").read_text())
    assert block == docs_block(result), "run python -m training.studies.patch_gate_study"


def test_the_interval_bounds_in_the_experiments_are_their_results() -> None:
    from training.studies.interval_bounds import docs_block

    text = (ROOT / "docs" / "experiments.md").read_text()
    result = json.loads((ROOT / "docs" / "results" / "interval_bounds.json").read_text())
    assert docs_block(result) in text, ("run python -m training.studies.interval_bounds")


def test_the_capacity_study_in_the_experiments_is_its_results() -> None:
    from training.studies.capacity_study import docs_block

    text = (ROOT / "docs" / "experiments.md").read_text()
    result = json.loads((ROOT / "docs" / "results" / "capacity_study.json").read_text())
    assert docs_block(result) in text, "run python -m training.studies.capacity_study"
