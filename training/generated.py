"""Blocks of a Markdown file that a script writes: ``<!-- NAME -->`` ... ``<!-- /NAME -->``.

A figure in a document is written by the script that measured it; tests read
the block back and compare it with the results file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def read_block(path: Path, name: str) -> str | None:
    """The block's text without its markers; None when the file has no such block."""
    text = Path(path).read_text()
    begin, end = _markers(name)
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) + len(begin):text.index(end)].strip("\n")


def replace_block(text: str, name: str, markdown: str) -> str:
    """``text`` with the block replaced (or appended) by ``markdown``; the rest is kept."""
    begin, end = _markers(name)
    block = f"{begin}\n{markdown.strip(chr(10))}\n{end}"
    if begin in text and end in text:
        return text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    return text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"


def write_block(path: Path, name: str, markdown: str) -> None:
    """Replace the block (or append it) with ``markdown`` in the file."""
    path = Path(path)
    path.write_text(replace_block(path.read_text() if path.exists() else "", name, markdown))


def write_results(result: dict, out: Path, docs: Path, name: str, block: str) -> None:
    """A study's results file and the block written from it, together (so the test that
    compares them holds)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_block(docs, name, block)
