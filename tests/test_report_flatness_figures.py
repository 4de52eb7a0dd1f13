"""The σ² vs F and loss-profile figures (registered builders replacing the placeholders)."""

from __future__ import annotations

import json

import numpy as np

from varprinciple.report.build import build_report
from varprinciple.report.figures import FIGURES
from varprinciple.report.figures.loss_profiles import loss_profiles_plot
from varprinciple.report.figures.variance_flatness import variance_flatness_plot
from varprinciple.report._input import ReportData


def _results():
    rng = np.random.default_rng(0)
    vf, lp = [], []
    for g, psi in (("sgd", 2.0), ("dropout", 1.0)):
        for s in range(2):
            F = np.geomspace(0.5, 5, 6)
            comps = [{"component": i, "variance": float(0.01 * F[i] ** -psi * rng.lognormal(0, 0.1)),
                      "variance_short": 0.01, "width": float(F[i]), "drift": i == 0} for i in range(6)]
            vf.append({"run_id": f"{g}-{s}", "method": g, "group": g, "psi": psi, "intercept": float(np.log(0.01)),
                       "ci_low": psi - 0.5, "ci_high": psi + 0.5, "p_value": 0.01, "components": comps})
            t = np.linspace(-1, 1, 9)
            for kind, d in (("pc", 1), ("random", 0), ("interpolation", 0)):
                lp.append({"run_id": f"{g}-{s}", "method": g, "group": g, "kind": kind, "direction": d,
                           "t": t.tolist(), "loss": (0.1 * (1 + 3 * t ** 2)).tolist(), "loss0": 0.1})
    flat = [{"group": "sgd", "quantity": "psi", "estimate": 2.0, "ci_low": 1.5, "ci_high": 2.5}]
    return {"schema_version": 1, "settings": {"confidence": 0.95}, "provenance": {}, "relations": [],
            "groups": [], "comparisons": [], "skipped": [], "flatness": flat, "variance_flatness": vf,
            "loss_profiles": lp}


def test_builders_are_registered_not_planned():
    assert FIGURES["variance_flatness"].build is variance_flatness_plot
    assert FIGURES["loss_profiles"].build is loss_profiles_plot


def test_variance_flatness_figure_draws_every_run():
    fig = variance_flatness_plot(ReportData(_results(), None, "mem"))
    axs = [a for a in fig.axes if a.get_visible()]
    assert len(axs) == 2 and "ψ 2" in axs[0].get_title()
    # per run: filled non-drift points, hollow drift point, and the dashed fit
    assert sum(len(c.get_offsets()) for c in axs[0].collections) == 2 * 6
    assert len(axs[0].lines) == 2
    x, y = axs[0].lines[0].get_data()
    np.testing.assert_allclose(np.log(y), np.log(0.01) - 2.0 * np.log(x))


def test_loss_profile_figure_has_a_panel_per_kind():
    fig = loss_profiles_plot(ReportData(_results(), None, "mem"))
    axs = [a for a in fig.axes if a.get_visible()]
    assert len(axs) == 3 and all(len(a.get_lines()) == 4 + 1 for a in axs)   # 4 runs + threshold line


def test_report_draws_them_when_the_results_have_the_keys(tmp_path):
    from test_report import write_fixture  # noqa: E402  (tests/ is on sys.path under pytest)
    p = write_fixture(tmp_path)
    results = json.loads(p.read_text())
    extra = _results()
    results.update(variance_flatness=extra["variance_flatness"], loss_profiles=extra["loss_profiles"])
    p.write_text(json.dumps(results))
    res = build_report(p, tmp_path / "out", dpi=40)
    drawn = {f.name for f in res.files if f.kind == "figure"}
    assert {"variance_flatness", "loss_profiles"} <= drawn
    assert "variance_flatness" not in dict(res.skipped_figures)
