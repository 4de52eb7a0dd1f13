"""Documentation examples run: every ```python block of a docs page marked
``<!-- doctest: run -->`` is executed, in order, in one namespace per page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def runnable_pages():
    return sorted(p for p in DOCS.glob("*.md") if "<!-- doctest: run -->" in p.read_text())


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.name)
def test_docs_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = BLOCK.findall(page.read_text())
    assert blocks, f"{page.name} is marked runnable but has no python block"
    ns: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), ns)
