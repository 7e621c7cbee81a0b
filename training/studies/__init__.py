"""One-off studies behind the release's choices: each a command that measures one question
on validation or out-of-fold series and writes its results file (never the test sets)."""

import argparse
from pathlib import Path

from training.generated import write_results

DOCS = Path(__file__).resolve().parents[2] / "docs"


def fold_study_parser(description: str, work: str, results: str) -> argparse.ArgumentParser:
    """The options every study of the kept legs' folds takes: its cache (``--work``), the
    legs (``--root``), a check on the first cases (``--limit``), its results file and the
    Markdown file its block goes to. ``--emidec`` is each study's to add."""
    from training import legs

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--root", type=Path, default=legs.LEGS_ROOT)
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first cases of each fold (checks the command)")
    parser.add_argument("--out", type=Path, default=DOCS / "results" / results)
    parser.add_argument("--docs", type=Path, default=DOCS / "experiments.md")
    return parser


def finish_study(result: dict, block: str, args, name: str) -> int:
    """A study command's end: its results file and docs block written together, unless
    ``args.limit`` makes it a check of the command (which writes nothing); the block
    printed either way."""
    if args.limit is None:
        write_results(result, args.out, args.docs, name, block)
    print(block)
    return 0
