"""The HTML report opens in a real headless Chromium and shows its figures.

Under CI=true a missing browser FAILS these tests (`.ci/run` installs Debian's chromium);
elsewhere they skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from varprinciple.report import build_report

from test_report_real import _simulate  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.browser

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--force-device-scale-factor=1"]
WIDTH, HEIGHT = 1200, 9000


BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _chromium(names: tuple[str, ...] = BROWSER_NAMES) -> str:
    """Path of a headless-capable Chromium; fail under CI=true when there is none, else skip."""
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("headless Chromium not found but CI=true: .ci/run must install Debian's chromium")
    pytest.skip("headless Chromium not installed (apt-get install chromium)")


def _run(browser: str, tmp: Path, *args: str, url: str) -> subprocess.CompletedProcess:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    browser = _chromium()
    tmp = tmp_path_factory.mktemp("browser")
    from varprinciple.stats import analyze

    logs = _simulate(tmp / "logs", random=4, flatness=True, seed=3)
    path, _ = analyze(logs, equivalence_margin=0.25, resamples=99).write(tmp / "results.json")
    res = build_report(path, tmp / "out", formats="html")
    url = res.html.resolve().as_uri()
    dom = _run(browser, tmp, "--dump-dom", url=url)
    shot = tmp / "shot.png"
    snap = _run(browser, tmp, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url=url)
    return res, dom, snap, shot


def test_html_renders_in_headless_chromium(rendered):
    """One test (one render under pytest-xdist): the DOM has the content, the screenshot the figures."""
    res, dom, snap, shot = rendered
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<h1>Variance principle report</h1>" in html
    assert html.count("<table") == 4  # groups, comparisons, flatness, relations
    assert html.count('src="data:image/png;base64,') == 4
    assert "b [95% CI]" in html and "sgd-s0" in html and "Holm p" in html
    for bad in ("Traceback", "ERR_FILE_NOT_FOUND", "This page isn", "Error"):
        assert bad not in html

    from matplotlib.image import imread

    assert snap.returncode == 0 and shot.exists(), snap.stderr[-2000:]
    img = imread(shot)[..., :3]  # float RGB in [0, 1]
    assert img.shape[:2] == (HEIGHT, WIDTH)
    assert img.std() > 0.05  # not blank
    # figures are the only coloured content (tables and text are grey scale): find matplotlib's
    # blue and red (tab:blue #1f77b4, tab:red #d62728) in bands of rows
    sat = img.max(axis=2) - img.min(axis=2)
    coloured_rows = np.flatnonzero((sat > 0.3).sum(axis=1) > 5)
    assert coloured_rows.size > 300, coloured_rows.size
    blue = (np.abs(img - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=2) < 0.12).sum()
    red = (np.abs(img - np.array([0xD6, 0x27, 0x28]) / 255).max(axis=2) < 0.12).sum()
    assert blue > 500 and red > 500, (blue, red)
    # the page is mostly white with non-white content where the figures are
    nonwhite = (img.min(axis=2) < 0.9).mean(axis=1)
    assert nonwhite[coloured_rows].mean() > 0.02


def test_missing_browser_fails_under_ci_and_skips_otherwise(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _chromium(("no-such-browser-xyz",))
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _chromium(("no-such-browser-xyz",))
