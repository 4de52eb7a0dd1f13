"""The study page: the answer first (claims table + forest plot), then the design, then details.

:func:`build_study_page` writes ``OUT/report.md`` and a self-contained ``OUT/report.html``
(figures embedded) for a study run by :func:`varprinciple.study.runner.run_manifest`, plus
the per-experiment reports under ``OUT/experiments/<name>/`` (:func:`build_report`).
"""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_write_bytes
from ..study.claims import ClaimRow
from .findings import readable_group, readable_source
from .format import format_estimate_ci, format_p, format_sig
from .pages import PAGE_CSS

__all__ = ["build_study_page", "claims_forest", "claims_markdown", "readable_unit", "ClaimSummary",
           "summarize_claims"]

logger = logging.getLogger(__name__)

#: one colour per verdict, all distinct (a reader tells "supported" from "equivalent" at a glance)
_VERDICT_COLOR = {"supported": "#1a7f37", "equivalent": "#0969da", "different": "#8250df",
                  "not supported": "#b42318", "inconclusive at this power": "#9a6700", "not evaluated": "#777777"}

_UNIT_LABEL = re.compile(r"(?<![\w.+-])((?:sgd\+dropout|dropout|sgd|gd)(?:-lr[0-9.]+)?(?:-bs\d+)?(?:-drop[0-9.]+)?)"
                         r"(?::(sgd|dropout|isotropic))?(?![\w.-])")
_SAME_GROUP = re.compile(r"^(\S+): (sgd|dropout|isotropic) − (sgd|dropout|isotropic)(.*)$")


def readable_unit(unit: str | None) -> str:
    """A claims-table unit in words: ``sgd+dropout-lr0.1-bs32-drop0.1:dropout`` →
    ``SGD + dropout (lr 0.1, B 32, drop 0.1) · dropout noise``.

    Examples
    --------
    >>> readable_unit("dropout-lr0.1-drop0.1: dropout − sgd")
    'dropout (lr 0.1, drop 0.1): dropout noise − SGD noise'
    >>> readable_unit("dropout-lr0.1-drop0.1 − gd-lr0.1")
    'dropout (lr 0.1, drop 0.1) − GD (lr 0.1)'
    """
    if unit is None:
        return "—"
    m = _SAME_GROUP.match(unit)
    if m:
        return (f"{readable_group(m[1])}: {readable_source(m[2])} − {readable_source(m[3])}"
                + readable_unit(m[4]) if m[4] else
                f"{readable_group(m[1])}: {readable_source(m[2])} − {readable_source(m[3])}")

    def repl(x):
        return readable_group(x[1]) + (f" · {readable_source(x[2])}" if x[2] else "")
    return _UNIT_LABEL.sub(repl, unit)


def _where(r: ClaimRow) -> str:
    return "—" if r.experiment is None else f"{r.experiment}: {readable_unit(r.unit)}"


def _est(r: ClaimRow) -> str:
    if r.estimate is None:
        return "—"
    return format_estimate_ci(r.estimate, r.ci_low, r.ci_high, format_sig)


def _null(r) -> str:
    kind = getattr(r.kind, "value", r.kind)
    if kind == "equivalent":
        return f"{r.null:g} ± {r.margin:g}"
    return f"{'>' if kind == 'greater' else '<'} {r.null:g}"


def _loss(r: ClaimRow) -> str:
    if r.loss_a is None or r.loss_b is None:
        return ""
    return f"training losses {format_sig(r.loss_a)} vs {format_sig(r.loss_b)}"


def _note(r: ClaimRow) -> str:
    return "; ".join(x for x in (_loss(r), r.note) if x)


def claims_markdown(rows: Sequence[ClaimRow], *, confidence: float = 0.95) -> str:
    """The per-unit claims table as Markdown (every caveat and matched loss in its row)."""
    pct = f"{100 * confidence:g} %"
    out = [f"| claim | experiment: unit | quantity | claimed | estimate [{pct} CI] | p (Holm) | verdict | "
           "losses, caveats |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "—" if r.p_holm is None else format_p(r.p_holm)
        out.append(f"| {r.claim} | {_where(r)} | {r.quantity} | {_null(r)} | {_est(r)} | {p} | {r.verdict_text} | "
                   f"{_note(r) or ''} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- pooled findings per claim


@dataclass(frozen=True)
class ClaimSummary:
    """One claim over its units: the random-effects pooled estimate (statsmodels'
    ``combine_effects``, DerSimonian–Laird), its CI and the between-unit heterogeneity."""

    claim_id: str
    text: str
    quantity: str
    claimed: str
    n_units: int
    counts: dict
    pooled: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    tau2: float | None = None
    i2: float | None = None
    note: str | None = None

    def sentence(self, confidence: float) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.counts.items())
        if self.pooled is None:
            pooled = self.note or "no pooled estimate"
        else:
            pooled = (f"pooled {format_estimate_ci(self.pooled, self.ci_low, self.ci_high, format_sig)} "
                      f"({100 * confidence:g} % CI, random effects over {self.n_units} units; heterogeneity "
                      f"I² = {100 * self.i2:.0f} %, τ² = {format_sig(self.tau2)})")
        return f"{self.text} — claimed {self.claimed}; {pooled}; verdicts: {counts or 'none'}."


def summarize_claims(rows: Sequence[ClaimRow], *, confidence: float = 0.95) -> list[ClaimSummary]:
    """One :class:`ClaimSummary` per claim id, in table order."""
    import numpy as np
    from statsmodels.stats.meta_analysis import combine_effects

    out = []
    ids = list(dict.fromkeys(r.claim_id for r in rows))
    for cid in ids:
        sub = [r for r in rows if r.claim_id == cid]
        r0 = sub[0]
        counts: dict = {}
        for r in sub:
            counts[r.verdict_text] = counts.get(r.verdict_text, 0) + 1
        ok = [r for r in sub if r.estimate is not None and r.se is not None and r.se > 0]
        kw = dict(claim_id=cid, text=r0.claim, quantity=r0.quantity, claimed=_null(r0), n_units=len(ok),
                  counts=counts)
        if len(ok) < 2:
            out.append(ClaimSummary(**kw, note=(f"one unit: {_est(ok[0])}" if ok else "no unit with an estimate")))
            continue
        eff = np.array([r.estimate for r in ok])
        var = np.array([r.se ** 2 for r in ok])
        with np.errstate(invalid="ignore"):  # statsmodels also computes HKSJ variants, NaN for few units (unused)
            res = combine_effects(eff, var, method_re="dl", alpha=1 - confidence)
            ci = res.conf_int(alpha=1 - confidence, use_t=False)
        # DerSimonian-Laird truncates tau^2 at 0 (statsmodels' "dl" does not: a negative tau^2 would
        # weight the units above their inverse variances and narrow the interval); at tau^2 = 0 the
        # random-effects summary is the fixed-effect one, and I^2 = max(0, (Q - df) / Q)
        if res.tau2 > 0:
            pooled, (lo, hi), tau2 = float(res.mean_effect_re), ci[1], float(res.tau2)
        else:
            pooled, (lo, hi), tau2 = float(res.mean_effect_fe), ci[0], 0.0
        out.append(ClaimSummary(**kw, pooled=pooled, ci_low=float(lo), ci_high=float(hi),
                                tau2=tau2, i2=max(0.0, float(res.i2))))
    return out


def _findings_html(m, rows: Sequence[ClaimRow], confidence: float) -> str:
    e = html.escape
    specs = {c.id: c for c in m.claims}
    summ = {s.claim_id: s for s in summarize_claims(rows, confidence=confidence)}
    shown_as_control = {x for c in m.claims for x in c.controls}
    out = ['<div id="claim-findings">']
    for cid, s in summ.items():
        if cid in shown_as_control:
            continue
        spec = specs.get(cid)
        rest = s.sentence(confidence)[len(s.text) + 3:]
        out.append(f'<div class="claim"><p><strong>{e(s.text)}</strong><br>{e(rest)}</p>')
        out.append(_verdict_bar(s.counts))
        sub = [r for r in rows if r.claim_id == cid and (_loss(r) or r.note)]
        if sub:
            out.append("<ul class='unit-notes'>" + "".join(
                f"<li>{e(_where(r))}: {e(_est(r))} — {e(_note(r))}</li>" for r in sub) + "</ul>")
        for x in (spec.controls if spec else ()):
            cs = summ.get(x)
            if cs is not None:
                out.append(f'<p class="control">{_control_prefix(cs)}{e(cs.sentence(confidence))}</p>'
                           + _verdict_bar(cs.counts))
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


def _control_prefix(s: ClaimSummary, md: bool = False) -> str:
    if s.text.lower().startswith("control"):
        return ""
    return "*Control* — " if md else "<em>Control</em> — "


def _verdict_bar(counts: Mapping[str, int]) -> str:
    e = html.escape
    parts = []
    for text, n in counts.items():
        v = next((k for k in _VERDICT_COLOR if text.startswith(k)), "not evaluated")
        parts.append(f'<span class="verdict" style="background:{_VERDICT_COLOR[v]}">{n} {e(text)}</span>')
    return '<p class="verdicts">' + " ".join(parts) + "</p>"


def _findings_md(m, rows: Sequence[ClaimRow], confidence: float) -> list[str]:
    specs = {c.id: c for c in m.claims}
    summ = {s.claim_id: s for s in summarize_claims(rows, confidence=confidence)}
    shown_as_control = {x for c in m.claims for x in c.controls}
    md = []
    for cid, s in summ.items():
        if cid in shown_as_control:
            continue
        md.append(f"- **{s.text}** — {s.sentence(confidence)[len(s.text) + 3:]}")
        for r in rows:
            if r.claim_id == cid and (_loss(r) or r.note):
                md.append(f"  - {_where(r)}: {_est(r)} — {_note(r)}")
        for x in (specs[cid].controls if cid in specs else ()):
            if x in summ:
                md.append(f"  - {_control_prefix(summ[x], md=True)}{summ[x].sentence(confidence)}")
    return md + [""]


def _claims_html(rows: Sequence[ClaimRow], confidence: float) -> str:
    e = html.escape
    pct = f"{100 * confidence:g}%"
    head = ("<thead><tr><th class='txt'>claim</th><th class='txt'>experiment: unit</th><th class='txt'>quantity</th>"
            f"<th class='txt'>claimed</th><th class='num'>estimate [{pct} CI]</th><th class='num'>p (Holm)</th>"
            "<th class='txt'>verdict</th><th class='txt'>losses, caveats</th></tr></thead>")
    body = []
    prev = None
    for r in rows:
        claim = "" if r.claim_id == prev else e(r.claim)
        prev = r.claim_id
        p = "—" if r.p_holm is None else e(format_p(r.p_holm))
        color = _VERDICT_COLOR.get(r.verdict, "#222")
        body.append(f"<tr><td class='txt'>{claim}</td><td class='txt'>{e(_where(r))}</td>"
                    f"<td class='txt'>{e(r.quantity)}</td>"
                    f"<td class='txt'>{e(_null(r))}</td><td class='num'>{e(_est(r))}</td><td class='num'>{p}</td>"
                    f"<td class='txt' style='color:{color};font-weight:bold'>{e(r.verdict_text)}</td>"
                    f"<td class='txt note'>{e(_note(r))}</td></tr>")
    return (f'<table class="vp-table" id="claims-table"><caption>Claims per unit: estimate, '
            f'{pct} CI, Holm-adjusted p within each claim family, verdict, training losses and caveats</caption>'
            f'{head}<tbody>' + "".join(body) + "</tbody></table>")


def claims_forest(rows: Sequence[ClaimRow], path: Path, *, dpi: int = 110) -> Path | None:
    """Forest plot of the claims table: one panel per claim with rows; the claimed region
    shaded (the equivalence band); one colour per verdict (legend at the top, inside the
    figure); 10 inches wide, so that it is shown unscaled in a 1,400-px browser window at the
    default dpi. None when no row has an estimate."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ids = []
    for r in rows:
        if r.estimate is not None and r.claim_id not in ids:
            ids.append(r.claim_id)
    if not ids:
        return None
    sizes = [sum(1 for r in rows if r.claim_id == i and r.estimate is not None) for i in ids]
    legend_in = 0.45
    height = sum(0.22 * s + 0.95 for s in sizes) + legend_in
    with matplotlib.rc_context({"svg.hashsalt": "varprinciple", "font.size": 8}):
        fig, axs = plt.subplots(len(ids), 1, figsize=(10, height),
                                gridspec_kw={"height_ratios": [s + 2.6 for s in sizes]}, squeeze=False)
        for ax, cid in zip(axs[:, 0], ids):
            sub = [r for r in rows if r.claim_id == cid and r.estimate is not None]
            r0 = sub[0]
            for y, r in enumerate(sub):
                color = _VERDICT_COLOR.get(r.verdict, "#222")
                lo = r.ci_low if r.ci_low is not None else r.estimate
                hi = r.ci_high if r.ci_high is not None else r.estimate
                ax.plot([lo, hi], [y, y], color=color, lw=1.6)
                ax.plot([r.estimate], [y], "o", color=color, ms=4.5)
            ax.axvline(r0.null, color="#444", lw=0.8, ls="--")
            if r0.kind == "equivalent" and r0.margin:
                ax.axvspan(r0.null - r0.margin, r0.null + r0.margin, color="#0969da", alpha=0.08)
            ax.set_yticks(range(len(sub)))
            ax.set_yticklabels([textwrap.shorten(_where(r), 72, placeholder="…") for r in sub], fontsize=7)
            ax.set_ylim(len(sub) - 0.5, -0.5)
            title = f"{r0.claim} — {r0.quantity} (claimed {_null(r0)})"
            ax.set_title("\n".join(textwrap.wrap(title, 78)), fontsize=8, loc="left")
        used = [v for v in _VERDICT_COLOR if any(r.verdict == v for r in rows if r.estimate is not None)]
        handles = [Line2D([], [], color=_VERDICT_COLOR[v], marker="o", lw=1.6, label=v) for v in used]
        top = 1 - legend_in / height
        if handles:
            fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
                       bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, top))
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
        items.append(("Power of the applied rule", design.summary().replace("\n", "; ")))
        if m.power.get("why"):
            items.append(("Why this many seeds (declared before the runs)", " ".join(str(m.power["why"]).split())))
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


#: The single report's stylesheet (pages.py) plus the study page's banner, claim blocks and verdict chips.
_CSS = PAGE_CSS + """.banner{background:#fff4ce;border:1px solid #9a6700;padding:.5em;margin:1em 0}
div.claim{border-left:3px solid #ccc;padding:.1em .8em;margin:.8em 0}p.control{margin-left:1.2em;font-size:.92em}
span.verdict{color:#fff;border-radius:3px;padding:.05em .4em;margin-right:.3em;font-size:.82em}
p.verdicts{margin:.2em 0}ul.unit-notes{font-size:.85em;margin:.2em 0}td.note{font-size:.85em;max-width:28em}
p.limits{background:#f6f8fa;border:1px solid #d0d7de;padding:.5em .8em}
"""


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
    h.append(f'<p class="note">Per claim: one sentence, the random-effects pooled estimate over its units '
             f'(statsmodels combine_effects, DerSimonian–Laird; {100 * m.confidence:g} % CI; '
             'I² and τ²: between-unit '
             'heterogeneity), the verdict counts (rules: docs/study.md), training losses and caveats of its units, '
             'and the control that bears on it right below it.</p>')
    h.append(_findings_html(m, rows, m.confidence))
    if m.limits:
        h.append(f'<h3 id="limits">Known limits</h3><p class="limits">{e(m.limits)}</p>')
    h.append('<h2 id="units">Claims per unit</h2>')
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
    md += ["## Findings", ""] + _findings_md(m, rows, m.confidence)
    if m.limits:
        md += ["### Known limits", "", m.limits, ""]
    md += ["## Claims per unit", "", claims_markdown(rows, confidence=m.confidence)]
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
