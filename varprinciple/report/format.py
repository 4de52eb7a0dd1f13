"""The one formatting module of the report: rounding, number style and table rendering.

Every number a report shows passes through a function of this module, and every table is
rendered by it, to Markdown, LaTeX (booktabs), HTML and CSV. Rounding lives here and
nowhere else; CSV files keep the raw numbers at full precision.

Conventions (statistical reporting, APA-like; docs/report.md):

* estimates (exponent b, differences) with 2 decimals: ``0.98 [0.85, 1.11]``;
* other quantities (λ_max, Tr(H), ψ, ρ, ...) with 3 significant digits, in scientific
  notation below 0.001 or from 10⁶ on: ``0.0123``, ``1234``, ``1.23e−05``;
* p-values with 3 decimals and no leading zero, ``p < .001`` below that;
* correlations with 2 decimals and no leading zero: ``.85``;
* counts exactly; negative numbers with the minus sign U+2212;
* undefined values (JSON ``null``) as an em dash ``—``.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MISSING",
    "MINUS",
    "is_missing",
    "format_fixed",
    "format_sig",
    "format_p",
    "format_r",
    "format_int",
    "format_ci",
    "format_estimate_ci",
    "format_percent",
    "parse_number",
    "Column",
    "ReportTable",
    "to_markdown",
    "to_latex",
    "to_html",
    "to_csv",
    "latex_escape",
]

#: Text of an undefined value (JSON ``null``, NaN).
MISSING = "—"
#: The minus sign used in formatted numbers (U+2212).
MINUS = "−"
#: Decimals of estimates such as the exponent b and differences of b.
ESTIMATE_DECIMALS = 2
#: Significant digits of other quantities (λ_max, Tr(H), ψ, ρ, ...).
SIG_DIGITS = 3


def is_missing(x: Any) -> bool:
    """True for None, NaN and pandas' missing values."""
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _minus(text: str) -> str:
    return text.replace("-", MINUS)


def format_fixed(x: Any, decimals: int = ESTIMATE_DECIMALS) -> str:
    """Round to ``decimals`` decimals; negative zero prints as ``0.00``.

    Examples
    --------
    >>> format_fixed(0.98765), format_fixed(-0.0012), format_fixed(None)
    ('0.99', '0.00', '—')
    >>> format_fixed(-1.5, 1)
    '−1.5'
    """
    if is_missing(x):
        return MISSING
    x = float(x)
    if not math.isfinite(x):
        return MISSING
    text = f"{x:.{decimals}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{decimals}f}"
    return _minus(text)


def format_sig(x: Any, digits: int = SIG_DIGITS) -> str:
    """Round to ``digits`` significant digits (at least; integers keep all their digits).

    Fixed notation for 0.001 <= |x| < 10**6, scientific otherwise.

    Examples
    --------
    >>> format_sig(0.012345), format_sig(1234.5), format_sig(12.345), format_sig(3.2e-5)
    ('0.0123', '1234', '12.3', '3.20e−05')
    >>> format_sig(0), format_sig(-2.5e7)
    ('0', '−2.50e+07')
    """
    if is_missing(x):
        return MISSING
    x = float(x)
    if not math.isfinite(x):
        return MISSING
    if x == 0.0:
        return "0"
    ax = abs(x)
    if ax < 1e-3 or ax >= 1e6:
        return _minus(f"{x:.{digits - 1}e}")
    decimals = max(0, digits - 1 - math.floor(math.log10(ax)))
    text = f"{x:.{decimals}f}"
    if abs(float(text)) >= 10 ** (digits - decimals) and decimals > 0:  # 9.995 -> 10.00
        text = f"{x:.{decimals - 1}f}"
    return _minus(text)


def format_p(p: Any) -> str:
    """A p-value: 3 decimals, no leading zero, ``< .001`` below 0.001.

    Examples
    --------
    >>> format_p(0.0234), format_p(0.00004), format_p(0.5), format_p(None)
    ('.023', '< .001', '.500', '—')
    >>> format_p(0.99996)
    '1.000'
    """
    if is_missing(p):
        return MISSING
    p = float(p)
    if not math.isfinite(p):
        return MISSING
    if p < 0.001:
        return "< .001"
    text = f"{p:.3f}"
    if text == "0.001" or text.startswith("0."):
        text = text[1:]
    return text


def format_r(r: Any, decimals: int = 2) -> str:
    """A correlation (bounded by 1): ``decimals`` decimals, no leading zero.

    Examples
    --------
    >>> format_r(0.8543), format_r(-0.1234), format_r(1.0)
    ('.85', '−.12', '1.00')
    """
    if is_missing(r):
        return MISSING
    text = format_fixed(r, decimals)
    if text.startswith("0."):
        return text[1:]
    if text.startswith(MINUS + "0."):
        return MINUS + text[2:]
    return text


def format_int(n: Any) -> str:
    """A count, exactly.

    Examples
    --------
    >>> format_int(12), format_int(12.0), format_int(None)
    ('12', '12', '—')
    """
    if is_missing(n):
        return MISSING
    return str(int(n))


def format_ci(lo: Any, hi: Any, fmt: Callable[[Any], str] = format_fixed) -> str:
    """A confidence interval ``[lo, hi]``.

    Examples
    --------
    >>> format_ci(0.8512, 1.1123)
    '[0.85, 1.11]'
    """
    return f"[{fmt(lo)}, {fmt(hi)}]"


def format_estimate_ci(est: Any, lo: Any, hi: Any, fmt: Callable[[Any], str] = format_fixed) -> str:
    """``estimate [ci_low, ci_high]``; a bare estimate when both bounds are undefined.

    Examples
    --------
    >>> format_estimate_ci(0.9812, 0.8512, 1.1123)
    '0.98 [0.85, 1.11]'
    >>> format_estimate_ci(0.9812, None, None)
    '0.98'
    """
    if is_missing(lo) and is_missing(hi):
        return fmt(est)
    return f"{fmt(est)} {format_ci(lo, hi, fmt)}"


def format_percent(level: Any) -> str:
    """A confidence level as a percentage without needless decimals.

    Examples
    --------
    >>> format_percent(0.95), format_percent(0.9), format_percent(0.995)
    ('95%', '90%', '99.5%')
    """
    if is_missing(level):
        return MISSING
    pct = round(float(level) * 100, 6)
    return f"{pct:g}%"


_NUM_RE = re.compile(r"^-?(\d+)?(?:\.(\d+))?(?:e([+-]\d+))?$")


def parse_number(text: str) -> tuple[float, float]:
    """Parse a formatted number back; return ``(value, half_unit)``.

    ``half_unit`` is half a unit in the last printed digit: the largest rounding error the
    text can hide. ``p < .001`` style texts are not numbers (use the raw p-value).

    Examples
    --------
    >>> parse_number("−0.98")
    (-0.98, 0.005)
    >>> parse_number(".023")
    (0.023, 0.0005)
    >>> parse_number("1.23e−05")
    (1.23e-05, 5e-08)
    """
    t = text.strip().replace(MINUS, "-").replace("$-$", "-")
    m = _NUM_RE.match(t)
    if not m or (m.group(1) is None and m.group(2) is None):
        raise ValueError(f"not a formatted number: {text!r}")
    decimals = len(m.group(2) or "")
    exp = int(m.group(3) or 0)
    half = 0.5 * 10.0 ** (exp - decimals)
    return float(t), float(f"{half:.3g}")


# ============================================================================ tables


@dataclass(frozen=True)
class Column:
    """A displayed column: its header and how a raw row becomes the cell's text."""

    header: str
    render: Callable[[Mapping[str, Any]], str]
    align: str = "l"  # "l" or "r"


@dataclass(frozen=True, eq=False)
class ReportTable:
    """One report table: raw data (CSV) plus how to display it (Markdown/LaTeX/HTML).

    ``data`` holds the raw JSON values at full precision, one row per displayed row;
    ``columns`` format them; ``notes`` are printed below the table.
    """

    name: str
    title: str
    data: pd.DataFrame
    columns: tuple[Column, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]

    def rows(self) -> list[list[str]]:
        """The formatted cells, row by row."""
        records = self.data.to_dict(orient="records")
        return [[c.render(r) for c in self.columns] for r in records]

    def to_frame(self) -> pd.DataFrame:
        """The formatted table as a DataFrame of strings (headers as column names)."""
        return pd.DataFrame(self.rows(), columns=self.headers)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: ReportTable, *, heading_level: int = 3) -> str:
    """Render a table as GitHub-flavoured Markdown with its title and notes.

    Examples
    --------
    >>> t = ReportTable("demo", "Demo", pd.DataFrame({"b": [0.987], "p": [0.0004]}),
    ...                 (Column("b", lambda r: format_fixed(r["b"]), "r"), Column("p", lambda r: format_p(r["p"]), "r")),
    ...                 ("p one-sided.",))
    >>> print(to_markdown(t))
    ### Demo
    <BLANKLINE>
    | b | p |
    |---:|---:|
    | 0.99 | < .001 |
    <BLANKLINE>
    *Note.* p one-sided.
    <BLANKLINE>
    """
    out = [f"{'#' * heading_level} {table.title}", ""]
    out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    out.append("|" + "|".join("---:" if c.align == "r" else ":---" for c in table.columns) + "|")
    for row in table.rows():
        out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        out.append("")
        out.extend(f"*Note.* {n}" if i == 0 else n for i, n in enumerate(table.notes))
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"$<$", ">": r"$>$", "|": r"$|$",
    MINUS: "$-$", "—": "---", "–": "--", "×": r"$\times$", "±": r"$\pm$", "≤": r"$\leq$",
    "≥": r"$\geq$", "λ": r"$\lambda$", "ψ": r"$\psi$", "ρ": r"$\rho$", "α": r"$\alpha$",
    "σ": r"$\sigma$", "∝": r"$\propto$", "²": r"$^2$", "≈": r"$\approx$", "·": r"$\cdot$",
    "−": "$-$", "’": "'", "“": "``", "”": "''", "Σ": r"$\Sigma$", "≪": r"$\ll$", "≫": r"$\gg$",
    "\u0304": "",  # combining macron (b̄): dropped
    "\u0302": "",  # combining circumflex (ψ̂): dropped
    # symbols the statistics' notes use (free text from the results JSON)
    "§": r"\S{}", "τ": r"$\tau$", "φ": r"$\varphi$", "θ": r"$\theta$", "μ": r"$\mu$", "δ": r"$\delta$",
    "Δ": r"$\Delta$", "Φ": r"$\Phi$", "γ": r"$\gamma$", "β": r"$\beta$", "Γ": r"$\Gamma$", "χ": r"$\chi$",
    "η": r"$\eta$", "κ": r"$\kappa$", "→": r"$\rightarrow$", "√": r"$\surd$", "≠": r"$\neq$", "…": r"\ldots{}",
    "‘": "`", "½": r"$\frac{1}{2}$", "³": r"$^3$", "⁶": r"$^6$", "∞": r"$\infty$", "\u00a0": "~",
}


def latex_escape(text: str) -> str:
    r"""Escape text for LaTeX (text mode), mapping the report's symbols to math.

    Examples
    --------
    >>> latex_escape("b_1 & 95% CI")
    'b\\_1 \\& 95\\% CI'
    >>> latex_escape("p < .001, λ")
    'p $<$ .001, $\\lambda$'
    """
    out = []
    for ch in str(text):
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:  # any other symbol: its ASCII decomposition (ā -> a), else its Unicode name
            base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(base or f"[{unicodedata.name(ch, 'U+%04X' % ord(ch)).lower()}]")
    return "".join(out)


def to_latex(table: ReportTable, *, label: str | None = None) -> str:
    """Render a table as a LaTeX ``table`` float with booktabs rules, caption and notes.

    Needs ``\\usepackage{booktabs}`` in the preamble.
    """
    spec = "".join(c.align for c in table.columns)
    lab = label or f"tab:{table.name}"
    lines = [
        "% Generated by varprinciple report; needs \\usepackage{booktabs}.",
        "\\begin{table}[htbp]",
        "\\centering",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\label{{{latex_escape(lab)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows():
        lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if table.notes:
        lines.append("\\par\\smallskip")
        lines.append("\\begin{minipage}{\\linewidth}\\footnotesize")
        lines.append("\\textit{Note.} " + " ".join(latex_escape(n) for n in table.notes))
        lines.append("\\end{minipage}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: ReportTable) -> str:
    """Render a table as an HTML ``<table>`` with caption and notes (escaped)."""
    e = html.escape
    out = [f'<table class="vp-table" id="table-{e(table.name)}">',
           f"<caption>{e(table.title)}</caption>", "<thead><tr>"]
    out += [f'<th class="{"num" if c.align == "r" else "txt"}">{e(c.header)}</th>' for c in table.columns]
    out.append("</tr></thead><tbody>")
    for row in table.rows():
        cells = "".join(f'<td class="{"num" if c.align == "r" else "txt"}">{e(v)}</td>'
                        for c, v in zip(table.columns, row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    if table.notes:
        out.append('<p class="note"><em>Note.</em> ' + " ".join(e(n) for n in table.notes) + "</p>")
    return "\n".join(out) + "\n"


def _csv_value(x: Any) -> Any:
    if is_missing(x):
        return ""
    if isinstance(x, (float, np.floating)):
        return repr(float(x))  # shortest round-tripping text: full precision
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (list, tuple, dict)):
        import json

        return json.dumps(x)
    return x


def to_csv(table: ReportTable) -> str:
    """The table's raw data as CSV at full precision (empty cell = undefined)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(table.data.columns)
    w.writerow(cols)
    for rec in table.data.itertuples(index=False, name=None):
        w.writerow([_csv_value(v) for v in rec])
    return buf.getvalue()


def render(table: ReportTable, fmt: str) -> str:
    """Render ``table`` in one of ``md``, ``tex``, ``html``, ``csv``."""
    return {"md": to_markdown, "tex": to_latex, "html": to_html, "csv": to_csv}[fmt](table)


def bullet_list(items: Sequence[str]) -> str:
    """Markdown bullet list (helper for the Markdown page)."""
    return "\n".join(f"- {i}" for i in items) + ("\n" if items else "")
