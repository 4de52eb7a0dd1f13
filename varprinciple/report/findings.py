"""The findings block: one line per claim-like result of a results JSON, caveats beside them.

``varprinciple test`` and ``varprinciple study`` print it before the detailed tables, and the
report pages open with it. One line per

* group exponent b (``b > 0``; the isotropic source is the control, expected b ≈ 0),
* confirmatory comparison (slope differences between groups or noise sources, TOST when a
  margin was declared; flatness log λ_max / log Tr(H) with the two groups' training losses),
* ψ of the variance–flatness relation (``flatness`` rows of quantity ``psi``),

with estimate, CI, p and a verdict-style wording, followed by the caveats of that row
(:mod:`varprinciple.report.caveats`). Every other caveat of the results follows under
"Other caveats", so that each caveat of the file is shown once, beside its number; on the
terminal a per-probe caveat that recurs across a noise source's probes is one line with its
count (:func:`collapse_probe_caveats`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .caveats import Caveat, iter_caveats
from .format import format_estimate_ci, format_fixed, format_p, format_percent, format_sig

__all__ = ["Finding", "findings", "findings_text", "collapse_probe_caveats", "caveat_head", "COLLAPSE_MIN", "findings_markdown", "findings_html", "readable_group",
           "readable_source"]

_METHOD = {"gd": "GD", "sgd": "SGD", "dropout": "dropout", "sgd+dropout": "SGD + dropout"}
_SOURCE = {"sgd": "SGD noise", "dropout": "dropout noise", "isotropic": "isotropic control"}
_QUANTITY = {"slope": "b", "log_lambda_max": "log λ_max", "log_hessian_trace": "log Tr(H)"}
_FLAT = ("log_lambda_max", "log_hessian_trace")


def readable_group(label) -> str:
    """``sgd+dropout-lr0.1-bs32-drop0.1`` → ``SGD + dropout (lr 0.1, B 32, drop 0.1)``; other labels unchanged.

    Examples
    --------
    >>> readable_group("sgd-lr0.1-bs32")
    'SGD (lr 0.1, B 32)'
    >>> readable_group("my-own-group")
    'my-own-group'
    """
    from ..study.claims import label_fields

    f = label_fields(str(label))
    if f["method"] not in _METHOD:
        return str(label)
    parts = [f"lr {f['lr']:g}" if f["lr"] is not None else None,
             f"B {f['batch_size']}" if f["batch_size"] is not None else None,
             f"drop {f['drop_prob']:g}" if f["drop_prob"] is not None else None]
    parts = [p for p in parts if p]
    return _METHOD[f["method"]] + (f" ({', '.join(parts)})" if parts else "")


def readable_source(source) -> str:
    """``sgd`` → ``SGD noise``, ``isotropic`` → ``isotropic control``; others unchanged."""
    return _SOURCE.get(str(source), str(source))


@dataclass(frozen=True)
class Finding:
    """One line of the findings block and the caveats of its row."""

    kind: str
    what: str
    number: str
    verdict: str
    caveats: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.what}: {self.number} → {self.verdict}"


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _label(row: Mapping) -> str:
    lab = row.get("group_label")
    if lab is None:
        g = row.get("group")
        lab = g.get("group") if isinstance(g, Mapping) else g
    return str(lab)


def _side(side) -> tuple[str, str | None]:
    if not isinstance(side, Mapping):
        return str(side), None
    lab = side.get("label")
    if lab is None and isinstance(side.get("group"), Mapping):
        lab = side["group"].get("group")
    return str(lab), side.get("source")


def _est(est, lo, hi, fmt=format_fixed) -> str:
    if not _ok(est):
        return "no estimate"
    if _ok(lo) and _ok(hi):
        return format_estimate_ci(est, lo, hi, fmt)
    return f"{fmt(est)} (no interval)"


def _p(p, name="p") -> str:
    if not _ok(p):
        return ""
    text = format_p(p)
    return f", {name} {text}" if text.startswith("<") else f", {name} = {text}"


def _comparison_words(qty: str, la: str, sa, lb: str, sb):
    """A comparison row in words, and its verdict when the difference is significant.

    >>> what, more = _comparison_words("b", "sgd-lr0.1-bs32", "dropout", "sgd-lr0.1-bs32", "sgd")
    >>> what, more(False)
    ('b of dropout noise minus b of SGD noise, in networks trained with SGD (lr 0.1, B 32)', 'b of dropout noise smaller than b of SGD noise')
    >>> what, more = _comparison_words("b", "dropout-lr0.1-drop0.1", "dropout", "gd-lr0.1", "dropout")
    >>> what, more(True)
    ('b of dropout noise in networks trained with dropout (lr 0.1, drop 0.1) minus with GD (lr 0.1)', 'b of dropout noise larger with dropout (lr 0.1, drop 0.1) than with GD (lr 0.1)')
    >>> _comparison_words("log λ_max", "dropout-lr0.1-drop0.1", None, "gd-lr0.1", None)[0]
    'log λ_max of networks trained with dropout (lr 0.1, drop 0.1) minus with GD (lr 0.1)'
    """
    ga, gb = readable_group(la), readable_group(lb)
    if la == lb and sa and sb:
        a, b = f"{qty} of {readable_source(sa)}", f"{qty} of {readable_source(sb)}"
        return (f"{a} minus {b}, in networks trained with {ga}",
                lambda up: f"{a} {'larger' if up else 'smaller'} than {b}")
    if sa == sb:
        of = f"{qty} of {readable_source(sa)} in networks" if sa else f"{qty} of networks"
        return (f"{of} trained with {ga} minus with {gb}",
                lambda up: f"{qty}{' of ' + readable_source(sa) if sa else ''} {'larger' if up else 'smaller'} "
                           f"with {ga} than with {gb}")
    a = f"{qty} of {readable_source(sa)} in networks trained with {ga}" if sa else f"{qty} with {ga}"
    b = f"{qty} of {readable_source(sb)} with {gb}" if sb else f"{qty} with {gb}"
    return f"{a} minus {b}", lambda up: f"{a} {'larger' if up else 'smaller'} than {b}"


def findings(results: Mapping) -> tuple[list[Finding], list[Caveat]]:
    """The findings of a results dict and the caveats not shown beside one of them."""
    alpha = (results.get("settings") or {}).get("alpha") or 0.05
    caveats = list(iter_caveats(results))
    by_row: dict[tuple[str, int], list[str]] = {}
    for c in caveats:
        by_row.setdefault((c.table, c.index), []).append(c.text)
    shown: set[tuple[str, int]] = set()
    out: list[Finding] = []
    for i, g in enumerate(results.get("groups") or []):
        if not isinstance(g, Mapping) or g.get("block") is not None:
            continue
        lab, src = _label(g), g.get("source")
        est, lo, hi = g.get("slope"), g.get("ci_low"), g.get("ci_high")
        control = src == "isotropic" or bool(g.get("control"))
        if not (_ok(lo) and _ok(hi)):
            verdict = "not evaluated (no interval)"
        elif control:
            verdict = ("control: b ≈ 0 as expected (CI covers 0)" if lo <= 0 <= hi
                       else "control: b ≠ 0 — the fit is biased, distrust the other b")
        elif lo > 0:
            verdict = "b > 0 (variance grows with curvature)"
        elif hi < 0:
            verdict = "b < 0"
        else:
            verdict = "not distinguishable from 0 at this power"
        n = f", n = {g['n_runs']} runs" if g.get("n_runs") is not None else ""
        out.append(Finding("b", f"b of {readable_source(src)} in networks trained with {readable_group(lab)}",
                           _est(est, lo, hi) + _p(g.get("p_value"), "p (one-sided)") + n, verdict,
                           tuple(by_row.get(("groups", i), ()))))
        shown.add(("groups", i))
    for i, c in enumerate(results.get("comparisons") or []):
        if not isinstance(c, Mapping) or c.get("block") is not None or c.get("confirmatory") is False:
            continue
        q = str(c.get("quantity"))
        (la, sa), (lb, sb) = _side(c.get("group_a")), _side(c.get("group_b"))
        what, more = _comparison_words(_QUANTITY.get(q, q), la, sa, lb, sb)
        est, lo, hi = c.get("difference"), c.get("ci_low"), c.get("ci_high")
        p = c.get("p_adjusted") if _ok(c.get("p_adjusted")) else c.get("p_value")
        pname = "p (Holm)" if _ok(c.get("p_adjusted")) else "p"
        if not (_ok(est) and _ok(p)):
            verdict = "not evaluated"
        elif c.get("equivalent_adjusted") or (c.get("equivalent_adjusted") is None and c.get("equivalent")):
            verdict = f"equivalent within ±{c['margin']:g}"
        elif p < alpha:
            if q in _FLAT:
                flat, ratio = (readable_group(la), math.exp(est)) if est < 0 else (readable_group(lb), math.exp(-est))
                verdict = f"networks trained with {flat} flatter ({_QUANTITY[q][4:]} × {ratio:.2g})"
            else:
                verdict = more(est > 0)
        elif _ok(c.get("margin")) and _ok(lo) and _ok(hi) and (lo > c["margin"] or hi < -c["margin"]):
            verdict = f"different (outside ±{c['margin']:g}), not significant after Holm"
        else:
            verdict = "no difference detected at this power"
        num = _est(est, lo, hi) + _p(p, pname)
        if q in _FLAT and _ok(c.get("loss_a")) and _ok(c.get("loss_b")):
            num += f"; training losses {format_sig(c['loss_a'])} vs {format_sig(c['loss_b'])}"
            if not c.get("loss_mismatch"):
                verdict += " at matched loss"
        out.append(Finding("flatness" if q in _FLAT else "comparison", what, num, verdict,
                           tuple(by_row.get(("comparisons", i), ()))))
        shown.add(("comparisons", i))
    for i, f in enumerate(results.get("flatness") or []):
        if not isinstance(f, Mapping) or f.get("quantity") != "psi" or f.get("block") is not None:
            continue
        est, lo, hi = f.get("estimate"), f.get("ci_low"), f.get("ci_high")
        if not (_ok(lo) and _ok(hi)):
            verdict = "not evaluated (no interval)"
        elif lo > 0:
            verdict = "ψ > 0 (inverse variance–flatness relation)"
        elif hi < 0:
            verdict = "ψ < 0 (variance grows with width)"
        else:
            verdict = "not distinguishable from 0 at this power"
        out.append(Finding("psi", f"ψ, {readable_group(_label(f))}", _est(est, lo, hi, format_sig), verdict,
                           tuple(by_row.get(("flatness", i), ()))))
        shown.add(("flatness", i))
    rest = [c for c in caveats if (c.table, c.index) not in shown]
    return out, rest


def _header(results: Mapping) -> str:
    conf = (results.get("settings") or {}).get("confidence") or 0.95
    return (f"Findings ({format_percent(conf)} CIs over runs; verdicts read from the CI and p; "
            "every caveat of the results is listed beside its number)")


#: Per-probe caveats of one kind and noise source shown as one line on the terminal from this many on.
COLLAPSE_MIN = 3


def caveat_head(text: str) -> str:
    """The kind of a caveat: its text up to the first colon (``no isotropy_p``), or the whole text."""
    head = text.split(":", 1)[0]
    return head if head != text and len(head) <= 40 else text


def collapse_probe_caveats(results: Mapping, caveats: list[Caveat]) -> tuple[list[Caveat], list[tuple]]:
    """Split per-probe (``relations``) caveats of one kind and noise source that recur in at
    least ``COLLAPSE_MIN`` probes from the rest: ``(kept, groups)``, each group ``(source,
    head, caveats, n_probes_of_source)``. The terminal shows a group as one line; the reports
    and the results JSON keep every probe's caveat beside its numbers."""
    rel = [r for r in results.get("relations") or [] if isinstance(r, Mapping)]
    by: dict[tuple, list[Caveat]] = {}
    for c in caveats:
        if c.table == "relations" and c.index is not None and c.index < len(rel):
            by.setdefault((rel[c.index].get("source"), caveat_head(c.text)), []).append(c)
    big = {k for k, v in by.items() if len({c.index for c in v}) >= COLLAPSE_MIN}
    kept = [c for c in caveats if not (c.table == "relations" and c.index is not None and c.index < len(rel)
                                        and (rel[c.index].get("source"), caveat_head(c.text)) in big)]
    groups = [(src, head, by[(src, head)], sum(r.get("source") == src for r in rel)) for src, head in sorted(
        big, key=lambda k: (str(k[0]), k[1]))]
    return kept, groups


def _collapsed_line(src, head: str, cav: list[Caveat], n_src: int) -> str:
    n = len({c.index for c in cav})
    first = cav[0]
    why = first.text[len(head) + 1:].strip() if first.text.startswith(head + ":") else first.text
    return (f"  {head} in {n} of {n_src} probes of {readable_source(src)} (e.g. {first.where}: {why}); "
            "each probe's reason is beside its row in report.md and in the results JSON")


def findings_text(results: Mapping) -> str:
    """The findings block for a terminal (plain text). Per-probe caveats of one kind that recur
    in several probes of a noise source are one line each (:func:`collapse_probe_caveats`)."""
    fs, rest = findings(results)
    lines = [_header(results)]
    if not fs:
        lines.append("  (no group, comparison or ψ rows)")
    for f in fs:
        lines.append(f"  {f.line()}")
        lines += [f"      caveat: {c}" for c in f.caveats]
    if rest:
        kept, groups = collapse_probe_caveats(results, rest)
        lines.append(f"Other caveats ({len(rest)}" + (f", {len(rest) - len(kept)} of them in {len(groups)} "
                                                      f"line{'s' if len(groups) > 1 else ''}" if groups else "")
                     + "):")
        lines += [_collapsed_line(*g) for g in groups]
        lines += [f"  {c.line()}" for c in kept]
    return "\n".join(lines) + "\n"


def findings_markdown(results: Mapping) -> str:
    """The findings block as a Markdown list."""
    fs, rest = findings(results)
    lines = [_header(results) + ":", ""]
    for f in fs:
        lines.append(f"- **{f.what}**: {f.number} → *{f.verdict}*")
        lines += [f"  - caveat: {c}" for c in f.caveats]
    if rest:
        lines += ["", f"Other caveats ({len(rest)}):", ""] + [f"- {c.line()}" for c in rest]
    return "\n".join(lines) + "\n"


def findings_html(results: Mapping) -> str:
    """The findings block as HTML (``<ul id="vp-findings">`` and ``<ul id="vp-caveats">``)."""
    e = html.escape
    fs, rest = findings(results)
    items = []
    for f in fs:
        cav = "".join(f'<li class="caveat">caveat: {e(c)}</li>' for c in f.caveats)
        items.append(f"<li><strong>{e(f.what)}</strong>: {e(f.number)} → <em>{e(f.verdict)}</em>"
                     + (f"<ul>{cav}</ul>" if cav else "") + "</li>")
    out = [f'<p class="note">{e(_header(results))}</p>', '<ul id="vp-findings">' + "".join(items) + "</ul>"]
    if rest:
        out.append(f"<p><strong>Other caveats ({len(rest)})</strong></p>"
                   '<ul id="vp-caveats">' + "".join(f"<li>{e(c.line())}</li>" for c in rest) + "</ul>")
    return "\n".join(out)
