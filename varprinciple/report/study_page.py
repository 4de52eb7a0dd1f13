"""The study page: the answer first (claims table + forest plot), then the design, then details.

:func:`build_study_page` writes ``OUT/report.md`` and a self-contained ``OUT/report.html``
(figures embedded) for a study run by :func:`varprinciple.study.runner.run_manifest`, plus
the per-experiment reports under ``OUT/experiments/<name>/`` (:func:`build_report`).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io import atomic_write_bytes
from ..study.claims import ClaimRow
from .format import format_estimate_ci, format_p, format_sig
from .pages import PAGE_CSS

__all__ = ["build_study_page", "claims_forest", "claims_markdown"]

logger = logging.getLogger(__name__)

_VERDICT_COLOR = {"supported": "#1a7f37", "equivalent": "#1a7f37", "not supported": "#b42318",
                  "inconclusive at this power": "#9a6700", "not evaluated": "#777777"}


def _est(r: ClaimRow) -> str:
    if r.estimate is None:
        return "—"
    return format_estimate_ci(r.estimate, r.ci_low, r.ci_high, format_sig)


def _null(r: ClaimRow) -> str:
    if r.kind == "equivalent":
        return f"{r.null:g} ± {r.margin:g}"
    return f"{'>' if r.kind == 'greater' else '<'} {r.null:g}"


def claims_markdown(rows: Sequence[ClaimRow], *, confidence: float = 0.95) -> str:
    """The claims table as Markdown (the README shows it)."""
    pct = f"{100 * confidence:g} %"
    out = [f"| claim | experiment: unit | quantity | claimed | estimate [{pct} CI] | p (Holm) | verdict |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        where = "—" if r.experiment is None else f"{r.experiment}: {r.unit}"
        p = "—" if r.p_holm is None else format_p(r.p_holm)
        verdict = r.verdict_text + (f" ({r.note})" if r.note else "")
        out.append(f"| {r.claim} | {where} | {r.quantity} | {_null(r)} | {_est(r)} | {p} | {verdict} |")
    return "\n".join(out) + "\n"


def _claims_html(rows: Sequence[ClaimRow], confidence: float) -> str:
    e = html.escape
    pct = f"{100 * confidence:g}%"
    head = ("<thead><tr><th class='txt'>claim</th><th class='txt'>experiment: unit</th><th class='txt'>quantity</th>"
            f"<th class='txt'>claimed</th><th class='num'>estimate [{pct} CI]</th><th class='num'>p (Holm)</th>"
            "<th class='txt'>verdict</th></tr></thead>")
    body = []
    prev = None
    for r in rows:
        claim = "" if r.claim_id == prev else e(r.claim)
        prev = r.claim_id
        where = "—" if r.experiment is None else f"{e(r.experiment)}: {e(r.unit or '')}"
        p = "—" if r.p_holm is None else e(format_p(r.p_holm))
        color = _VERDICT_COLOR.get(r.verdict, "#222")
        note = f"<br><small>{e(r.note)}</small>" if r.note else ""
        body.append(f"<tr><td class='txt'>{claim}</td><td class='txt'>{where}</td><td class='txt'>{e(r.quantity)}</td>"
                    f"<td class='txt'>{e(_null(r))}</td><td class='num'>{e(_est(r))}</td><td class='num'>{p}</td>"
                    f"<td class='txt' style='color:{color};font-weight:bold'>{e(r.verdict_text)}{note}</td></tr>")
    return (f'<div class="vp-wrap"><table class="vp-table" id="claims-table"><caption>Claims: estimate, '
            f'{pct} CI, Holm-adjusted p within each claim family, verdict</caption>{head}<tbody>'
            + "".join(body) + "</tbody></table></div>")


def claims_forest(rows: Sequence[ClaimRow], path: Path, *, dpi: int = 110) -> Path | None:
    """Forest plot of the claims table: one panel per claim with rows; the claimed region
    shaded (the equivalence band, or the side of the null); None when no row has an estimate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = []
    for r in rows:
        if r.estimate is not None and r.claim_id not in ids:
            ids.append(r.claim_id)
    if not ids:
        return None
    sizes = [sum(1 for r in rows if r.claim_id == i and r.estimate is not None) for i in ids]
    with matplotlib.rc_context({"svg.hashsalt": "varprinciple", "font.size": 8}):
        fig, axs = plt.subplots(len(ids), 1, figsize=(7.5, sum(0.28 * s + 0.75 for s in sizes)),
                                gridspec_kw={"height_ratios": [s + 1.5 for s in sizes]}, squeeze=False)
        for ax, cid in zip(axs[:, 0], ids):
            sub = [r for r in rows if r.claim_id == cid and r.estimate is not None]
            r0 = sub[0]
            for y, r in enumerate(sub):
                color = _VERDICT_COLOR.get(r.verdict, "#222")
                lo = r.ci_low if r.ci_low is not None else r.estimate
                hi = r.ci_high if r.ci_high is not None else r.estimate
                ax.plot([lo, hi], [y, y], color=color, lw=1.5)
                ax.plot([r.estimate], [y], "o", color=color, ms=4)
            ax.axvline(r0.null, color="#444", lw=0.8, ls="--")
            if r0.kind == "equivalent" and r0.margin:
                ax.axvspan(r0.null - r0.margin, r0.null + r0.margin, color="#1a7f37", alpha=0.08)
            ax.set_yticks(range(len(sub)))
            ax.set_yticklabels([f"{r.experiment}: {r.unit}"[:60] for r in sub])
            ax.set_ylim(len(sub) - 0.5, -0.5)
            ax.set_title(f"{r0.claim_id}: {r0.quantity} (claimed {_null(r0)})", fontsize=8, loc="left")
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color=c, marker="o", lw=1.5, label=v) for v, c in _VERDICT_COLOR.items()
                   if v != "not evaluated" and any(r.verdict == v for r in rows)]
        if handles:
            axs[0, 0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.12), ncol=len(handles),
                             fontsize=7, frameon=False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
        plt.close(fig)
    return path


def _design_items(m, statement: Mapping, design, quick: bool) -> list[tuple[str, str]]:
    items = [("Variant", "QUICK (pipeline check on tiny configs; not evidence)" if quick else "full study"),
             ("Manifest", str(m.path)),
             ("Replicates", "runs (training seeds) are the replicates; every claim is tested over runs "
                            "(t over runs; Welch between groups, paired t for two noise sources of the same runs)"),
             ("Seeds", "[train] seed lists in each config (the same list in every arm); each run's training "
                       "seed is derived from its configuration (see docs/study.md, 'Matched seeds')"),
             ("Randomised", "initialisation, minibatch order and dropout masks (per run, from its seed); probe "
                            "noise draws and random directions (per run, from its probe seed); the statistics' "
                            f"resampling (seed {m.seed})"),
             ("Multiplicity", f"Holm within each claim family at alpha {m.alpha:g}; CIs at {m.confidence:g}")]
    for k, v in m.margins.items():
        items.append((f"Margin '{k}' = ±{v:g}", " ".join(m.margin_why.get(k, "").split())))
    if design is not None:
        items.append(("Power", design.summary().replace("\n", "; ")))
        if m.power.get("why"):
            items.append(("Why this many seeds", " ".join(str(m.power["why"]).split())))
    items.append(("Exclusions", "runs that fail schema validation are listed by `test` (skipped); runs that do "
                                "not reach the target training loss are reported by the stop rule; eigenvalues "
                                "below the floor never enter a log fit (counted per run)"))
    mach = statement.get("machine", {})
    items.append(("Machine", f"{mach.get('platform')}, {mach.get('cpu_count')} CPUs, device {mach.get('device')}, "
                             f"{mach.get('workers')} workers x 1 torch thread"))
    wall = f"{statement.get('wall_s', float('nan')):.0f} s (collection + tests)"
    if statement.get("runs_reused"):
        wall += (f"; a resumed invocation: it trained {statement.get('runs_collected')} runs and reused "
                 f"{statement['runs_reused']} finished ones, whose time is not included")
    items.append(("Wall time", wall))
    items.append(("Peak memory", f"{statement.get('peak_rss_mb', float('nan')):.0f} MB (largest process RSS)"))
    re = statement.get("reanalysed")
    if re:
        items.append(("Re-analysed", f"{re.get('created')}: every run was already collected; tests, claims and "
                                      f"report redone in {re.get('wall_s', float('nan')):.0f} s"))
    return items


#: The single report's stylesheet (pages.py) plus the study page's quick-variant banner.
_CSS = PAGE_CSS + ".banner{background:#fff4ce;border:1px solid #9a6700;padding:.5em;margin:1em 0}\n"


def build_study_page(out: Path, m, rows: Sequence[ClaimRow], results: Mapping[str, Mapping],
                     statement: Mapping, *, design=None, quick: bool = False, dpi: int = 110) -> Path:
    """Write OUT/report.md, OUT/report.html (and the per-experiment reports); returns the HTML path."""
    from .build import build_report

    out = Path(out)
    e = html.escape
    exp_pages, exp_errors = {}, {}
    for name in results:
        json_path = out / "results" / f"{name}.json"
        kw = dict(formats="md,html,csv", dpi=dpi, title=f"{m.title}: {name}",
                  command=statement.get("command") or f"varprinciple report {json_path}")
        try:
            exp_pages[name] = build_report(json_path, out / "experiments" / name, **kw).html
        except Exception as exc:  # a figure must not lose the tables: retry without figures
            logger.warning("report of %s failed (%s); writing it without figures", name, exc)
            exp_errors[name] = f"figures not drawn: {type(exc).__name__}: {exc}"
            try:
                exp_pages[name] = build_report(json_path, out / "experiments" / name, figures=False, **kw).html
            except Exception as exc2:
                exp_errors[name] = f"report failed: {type(exc2).__name__}: {exc2}"
    forest = claims_forest(rows, out / "figures" / "claims_forest.png", dpi=dpi)
    items = _design_items(m, statement, design, quick)
    command = statement.get("command") or f"varprinciple study --study {m.path}" + (" --quick" if quick else "")
    # ---------------------------------------------------------------- HTML
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(m.title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{e(m.title)}</h1>"]
    if quick:
        h.append('<p class="banner"><strong>QUICK variant.</strong> Tiny configs that check the pipeline; '
                 'the verdicts below are not evidence.</p>')
    h.append('<h2 id="findings">Findings</h2>')
    h.append(_claims_html(rows, m.confidence))
    if forest is not None:
        data = base64.b64encode(forest.read_bytes()).decode("ascii")
        h.append(f'<figure id="figure-claims-forest"><img alt="Forest plot of the claims" '
                 f'src="data:image/png;base64,{data}"><figcaption>Each claim\'s estimates with their '
                 f'{100 * m.confidence:g}% CIs (colour = verdict); dashed: the null value; shaded: the '
                 'equivalence band.</figcaption></figure>')
    h.append('<h2 id="design">Design</h2><dl class="kv">'
             + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items) + "</dl>")
    h.append('<h2 id="experiments">Experiments</h2><ul>')
    for x in m.experiments:
        if x.name not in results:
            continue
        link = exp_pages.get(x.name)
        rel = link.relative_to(out).as_posix() if link else None
        exp_t = statement.get("experiments", {}).get(x.name, {})
        h.append(f"<li><strong>{e(x.name)}</strong> ({e(x.role)}): {e(x.description)} — "
                 f"{exp_t.get('runs', '?')} runs, collected in {exp_t.get('collect_s', float('nan')):.0f} s"
                 + (f' — <a href="{e(rel)}">full report</a>' if rel else "")
                 + (f" — <em>{e(exp_errors[x.name])}</em>" if x.name in exp_errors else "") + "</li>")
    h.append("</ul>")
    h.append(f'<h2 id="reproduce">Reproduce</h2><pre id="vp-command">{e(command)}</pre>')
    h.append("</body></html>")
    html_path = out / "report.html"
    atomic_write_bytes(html_path, ("\n".join(h) + "\n").encode("utf-8"))
    # ---------------------------------------------------------------- Markdown
    md = [f"# {m.title}", ""]
    if quick:
        md += ["> **QUICK variant.** Tiny configs that check the pipeline; the verdicts below are not evidence.", ""]
    md += ["## Findings", "", claims_markdown(rows, confidence=m.confidence)]
    if forest is not None:
        md += [f"![Forest plot of the claims]({forest.relative_to(out).as_posix()})", ""]
    md += ["## Design", ""] + [f"- **{k}**: {v}" for k, v in items] + ["", "## Experiments", ""]
    for x in m.experiments:
        if x.name in results:
            link = exp_pages.get(x.name)
            md.append(f"- **{x.name}** ({x.role}): {x.description}"
                      + (f" — [full report]({link.relative_to(out).with_suffix('.md').as_posix()})" if link else "")
                      + (f" — *{exp_errors[x.name]}*" if x.name in exp_errors else ""))
    md += ["", "## Reproduce", "", "```", command, "```", ""]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode("utf-8"))
    return html_path
