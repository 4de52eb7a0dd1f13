"""Whole-report pages: one self-contained HTML page, a Markdown page and a LaTeX document.

The pages lead with the answer: a *Findings* section (the group table, the comparisons and
the forest plot: :data:`FINDINGS_TABLES`, :data:`FINDINGS_FIGURES`), then the other tables
and figures, then a design statement, the command and the provenance. The HTML page embeds
every figure as a base64 PNG and its stylesheet inline, so it needs no other file and loads
nothing from the network; wide or long tables scroll inside their own box (sticky header),
so the page fits a laptop screen. All pages carry the exact command, the input's location,
the analysis settings and the package versions, so the report is reproducible.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .format import ReportTable, latex_escape, to_html, to_latex, to_markdown

__all__ = ["PageContext", "FigureOutput", "html_page", "markdown_page", "latex_document", "FINDINGS_TABLES",
           "FINDINGS_FIGURES"]

#: Tables shown first, under "Findings" (in this order), when present.
FINDINGS_TABLES = ("groups", "comparisons")
#: Figures shown first, under "Findings", when drawn.
FINDINGS_FIGURES = ("forest",)


@dataclass(frozen=True)
class FigureOutput:
    """A drawn figure (its files) or a skipped one (its reason)."""

    name: str
    title: str
    caption: str
    png: Path | None = None
    svg: Path | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class PageContext:
    """What every page shows besides tables and figures."""

    title: str
    command: str
    location: str
    created: str
    versions: Mapping[str, str]
    settings: Mapping[str, object]
    provenance: Mapping[str, object]
    notes: tuple[str, ...] = ()
    design: Mapping[str, str] | None = None
    #: the results dict whose findings block (report.findings: one line per claim-like result,
    #: every caveat beside its number) opens the Findings section
    results: Mapping | None = None


PAGE_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:.85em;white-space:pre-wrap}
div.vp-wrap{overflow:auto;max-width:100%;max-height:75vh}table.vp-table{border-collapse:collapse;margin:1em 0 .3em;font-size:.86em}
table.vp-table caption{text-align:left;font-weight:bold;padding-bottom:.3em}
table.vp-table thead th{border-top:2px solid #222;border-bottom:1px solid #222;padding:.3em .6em;
position:sticky;top:0;background:#fff}
table.vp-table tbody tr:last-child td{border-bottom:2px solid #222}
table.vp-table td{padding:.2em .6em}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.txt,th.txt{text-align:left}p.note{font-size:.82em;color:#444;max-width:62em;margin-top:.2em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#444}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.85em}dl.kv dt{font-weight:bold}
dl.kv dd{margin:0}.skipped{font-size:.85em;color:#555}
"""


def _kv_html(items: Mapping[str, object]) -> str:
    e = html.escape
    rows = "".join(f"<dt>{e(str(k))}</dt><dd>{e(_kv_text(v))}</dd>" for k, v in items.items())
    return f'<dl class="kv">{rows}</dl>'


def _kv_text(v: object) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "null" if v is None else str(v)


def _split(tables, figures):
    first_t = [t for n in FINDINGS_TABLES for t in tables if t.name == n]
    rest_t = [t for t in tables if t not in first_t]
    drawn = [f for f in figures if f.skipped is None and f.png is not None]
    first_f = [f for n in FINDINGS_FIGURES for f in drawn if f.name == n]
    rest_f = [f for f in drawn if f not in first_f]
    return first_t, rest_t, first_f, rest_f


def _figure_html(f: FigureOutput) -> str:
    e = html.escape
    data = base64.b64encode(f.png.read_bytes()).decode("ascii")
    return (f'<figure id="figure-{e(f.name)}"><img alt="{e(f.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption><strong>{e(f.title)}.</strong> '
            f"{e(f.caption)}</figcaption></figure>")


def html_page(ctx: PageContext, tables: Sequence[ReportTable], figures: Sequence[FigureOutput]) -> str:
    """The self-contained HTML report: findings first, then tables, figures, design, provenance."""
    e = html.escape
    first_t, rest_t, first_f, rest_f = _split(tables, figures)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(ctx.title)}</title>", f"<style>{PAGE_CSS}</style>", "</head><body>",
           f"<h1>{e(ctx.title)}</h1>",
           f'<p>Input: <code id="vp-input">{e(ctx.location)}</code><br>Created: {e(ctx.created)}</p>',
           '<h2 id="findings">Findings</h2>']
    if ctx.results is not None:
        from .findings import findings_html
        out.append(findings_html(ctx.results))
    if not tables:
        out.append("<p>The results hold no rows to tabulate.</p>")
    for t in first_t:
        out.append(f'<div class="vp-wrap">{to_html(t)}</div>')
    out += [_figure_html(f) for f in first_f]
    if ctx.notes and ctx.results is None:  # with results, the findings block shows every note
        out.append('<h3>Notes from the analysis</h3><ul class="vp-notes">'
                   + "".join(f"<li>{e(n)}</li>" for n in ctx.notes) + "</ul>")
    out.append('<h2 id="tables">More tables</h2>')
    for t in rest_t:
        out.append(f'<div class="vp-wrap">{to_html(t)}</div>')
    out.append('<h2 id="figures">More figures</h2>')
    out += [_figure_html(f) for f in rest_f]
    skipped = [f for f in figures if f.skipped is not None]
    if skipped:
        out.append('<p class="skipped">Figures not drawn: '
                   + "; ".join(f"{e(f.title)} ({e(f.skipped)})" for f in skipped) + ".</p>")
    if ctx.design:
        out.append('<h2 id="design">Design</h2>' + _kv_html(ctx.design))
    out += ["<h2>Command</h2>", f'<pre id="vp-command">{e(ctx.command)}</pre>']
    out.append("<h2>Analysis settings</h2>" + _kv_html(ctx.settings))
    out.append("<h2>Provenance</h2><h3>Analysis</h3>" + _kv_html(ctx.provenance))
    out.append("<h3>Report environment</h3>" + _kv_html(ctx.versions))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _kv_md(items: Mapping[str, object]) -> str:
    return "\n".join(f"- **{k}**: `{_kv_text(v)}`" for k, v in items.items()) + "\n"


def markdown_page(ctx: PageContext, tables: Sequence[ReportTable], figures: Sequence[FigureOutput],
                  *, out_dir: Path) -> str:
    """The Markdown report (figures linked as relative PNG paths), findings first."""
    first_t, rest_t, first_f, rest_f = _split(tables, figures)

    def fig_md(f):
        return [f"### {f.title}", "", f"![{f.title}]({f.png.relative_to(out_dir).as_posix()})", "", f.caption, ""]

    out = [f"# {ctx.title}", "", f"Input: `{ctx.location}`  ", f"Created: {ctx.created}", "", "## Findings", ""]
    if ctx.results is not None:
        from .findings import findings_markdown
        out.append(findings_markdown(ctx.results))
    for t in first_t:
        out.append(to_markdown(t, heading_level=3))
    for f in first_f:
        out += fig_md(f)
    if ctx.notes and ctx.results is None:  # with results, the findings block shows every note
        out += ["### Notes from the analysis", ""] + [f"- {n}" for n in ctx.notes] + [""]
    out += ["## More tables", ""]
    for t in rest_t:
        out.append(to_markdown(t, heading_level=3))
    out += ["## More figures", ""]
    for f in rest_f:
        out += fig_md(f)
    skipped = [f for f in figures if f.skipped is not None]
    if skipped:
        out += ["Figures not drawn:", ""] + [f"- {f.title}: {f.skipped}" for f in skipped] + [""]
    if ctx.design:
        out += ["## Design", "", "\n".join(f"- **{k}**: {v}" for k, v in ctx.design.items()), ""]
    out += ["## Command", "", "```", ctx.command, "```", ""]
    out += ["## Analysis settings", "", _kv_md(ctx.settings), "## Provenance", "", "### Analysis", "",
            _kv_md(ctx.provenance), "### Report environment", "", _kv_md(ctx.versions)]
    return "\n".join(out)


def latex_document(ctx: PageContext, tables: Sequence[ReportTable], figures: Sequence[FigureOutput],
                   *, out_dir: Path) -> str:
    """A compilable LaTeX document (booktabs, graphicx) with every table and figure."""
    lines = [r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage[T1]{fontenc}",
             r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage[margin=2cm]{geometry}",
             r"\begin{document}", f"\\section*{{{latex_escape(ctx.title)}}}",
             f"Input: \\texttt{{{latex_escape(ctx.location)}}}\\\\",
             f"Command: \\texttt{{{latex_escape(ctx.command)}}}", ""]
    for t in tables:
        lines.append(to_latex(t))
    for f in figures:
        if f.skipped is None and f.png is not None:
            lines += [r"\begin{figure}[htbp]", r"\centering",
                      f"\\includegraphics[width=\\linewidth]{{{f.png.relative_to(out_dir).as_posix()}}}",
                      f"\\caption{{{latex_escape(f.title)}. {latex_escape(f.caption)}}}",
                      f"\\label{{fig:{latex_escape(f.name)}}}", r"\end{figure}", ""]
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"
