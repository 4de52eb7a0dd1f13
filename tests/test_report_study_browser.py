"""The study page opens with pooled findings and survives a 1,400-px Chromium window.

Renders the committed replication results (no collection) into a study page, then checks in
matplotlib that the forest plot's legend and panel titles lie inside the figure and that every
verdict has its own colour, and in headless Chromium (as tests/test_report_browser.py) that the
page shows the forest plot unscaled at 1,400 px with the supported and equivalent colours.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from varprinciple.report.study_page import _VERDICT_COLOR, build_study_page, claims_forest
from varprinciple.study import load_manifest
from varprinciple.study.claims import claims_table
from varprinciple.study.runner import study_design

from test_report_browser import _chromium, _run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "studies" / "replication.toml"
COMMITTED = ROOT / "reports" / "replication"
WIDTH = 1400


def _rows():
    m = load_manifest(MANIFEST)
    res = {e.name: json.loads((COMMITTED / "results" / f"{e.name}.json").read_text(encoding="utf-8"))
           for e in m.experiments}
    return m, res, claims_table(res, m.claims, alpha=m.alpha, confidence=m.confidence)


def test_verdict_colours_are_distinct():
    assert len(set(_VERDICT_COLOR.values())) == len(_VERDICT_COLOR)
    assert _VERDICT_COLOR["supported"] != _VERDICT_COLOR["equivalent"]


def test_forest_legend_and_titles_inside_the_figure(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    real_savefig = plt.Figure.savefig

    def spy(self, *a, **k):
        figs.append(self)
        return real_savefig(self, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    _m, _res, rows = _rows()
    path = claims_forest(rows, tmp_path / "forest.png")
    fig = figs[0]
    r = fig.canvas.get_renderer()
    box = fig.bbox
    legend = fig.legends[0].get_window_extent(r)
    assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1 + 0.5
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"supported", "equivalent", "different"} <= labels
    for ax in fig.axes:
        t = ax.title.get_window_extent(r)
        assert t.x1 <= box.x1 + 0.5 and t.x0 >= box.x0 - 0.5, ax.title.get_text()
    assert fig.axes[0].title.get_window_extent(r).y1 <= legend.y0 + 1  # the legend does not cover a title
    from matplotlib.image import imread
    assert imread(path).shape[1] <= 1118  # shown unscaled in the page's 1,150-px column


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study_page")
    m, res, rows = _rows()
    out = tmp / "study"
    (out / "results").mkdir(parents=True)
    statement = json.loads((COMMITTED / "study.json").read_text(encoding="utf-8"))
    # the per-experiment reports are not under test here: give build_study_page no experiments
    html_path = build_study_page(out, m, rows, {}, statement, design=study_design(m, rows))
    return tmp, html_path, m, rows


def test_study_page_reads_in_one_pass(page):
    _tmp, html_path, m, rows = page
    text = html_path.read_text(encoding="utf-8")
    # findings (pooled per claim, controls beside) before the per-unit table, limits on the page
    i_find, i_units = text.index('id="claim-findings"'), text.index('id="claims-table"')
    assert text.index('id="findings"') < i_find < text.index('id="limits"') < i_units < text.index('id="design"')
    block = text[i_find:i_units]
    assert "random effects over 6 units" in block and "I²" in block
    psi = block.index("Inverse variance-flatness relation")
    control = block.index('<p class="control">Control: a pure random walk')
    assert psi < control < block.index("SGD noise is aligned with curvature")  # the control right beside ψ
    assert "training losses" in block  # matched losses of the flatness units
    assert "different (outside ±0.3)" in text
    # units carry readable labels; an internal label may appear only inside a caveat naming a run
    # (e.g. "outlying network(s) sgd+dropout-...-seed5"), never as a unit ("group:source") or a cell
    assert re.search(r"(>|: )sgd\+dropout-lr0\.1-bs32-drop0\.1(:|<| −)", text) is None
    assert "SGD + dropout (lr 0.1, B 32, drop 0.1)" in text
    assert f"Holm over the {m.power['family_size']} rows of family" in text  # the declared family


def test_study_page_in_chromium_at_1400_px(page):
    browser = _chromium()
    tmp, html_path, _m, _rows_ = page
    shot = tmp / "shot.png"
    url = html_path.resolve().as_uri()
    dom = _run(browser, tmp, "--dump-dom", url=url)
    assert dom.returncode == 0 and 'id="claim-findings"' in dom.stdout
    snap = _run(browser, tmp, f"--screenshot={shot}", f"--window-size={WIDTH},20000", url=url)
    assert snap.returncode == 0 and shot.exists(), snap.stderr[-2000:]
    from matplotlib.image import imread
    img = imread(shot)[..., :3]
    assert img.shape[1] == WIDTH

    def count(hexcol):
        rgb = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)]) / 255
        return int((np.abs(img - rgb).max(axis=2) < 0.06).sum())

    # the verdict chips and the forest plot show both colours, distinguishable
    assert count(_VERDICT_COLOR["supported"]) > 500 and count(_VERDICT_COLOR["equivalent"]) > 500
    assert count(_VERDICT_COLOR["different"]) > 50
    # the forest plot is drawn at its natural width (not shrunk): 1,100 px of a 10-in figure at 110 dpi
    png_w = imread(next((tmp / "study" / "figures").glob("claims_forest.png"))).shape[1]
    assert png_w <= 1118
    shutil.rmtree(tmp / "profile", ignore_errors=True)
