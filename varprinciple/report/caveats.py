"""Every caveat of a results JSON, with the row and the number it belongs to.

One generic walker, :func:`iter_caveats`, is the only place that knows what counts as a
caveat; the terminal findings block, report.md and report.html all render its output, so a
caveat field added to any results row later is shown without touching the renderers.

A caveat is:

* a row's ``note``, ``loss_note`` or any other field whose name ends in ``_note``, and a
  ψ row's ``problem`` (the convention of every results row: plain words beside the number);
* a **refused interval**: a row with ``ci_low``/``ci_high`` both null (an estimate without
  an interval, or no estimate at all) — its note says why, or the caveat says that none was
  given;
* **pooled steps**: a ``groups`` row whose runs were analysed at different steps;
* a top-level ``notes`` entry, a ``skipped`` run (with its problems) and a set of runs with
  ``identical`` noise tables.

Rows of any list of the results JSON are walked (``relations``, ``groups``, ``comparisons``,
``flatness``, ``variance_flatness``, and lists added later); unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .format import format_estimate_ci, format_sig

__all__ = ["Caveat", "CAVEAT_FIELDS", "row_caveats", "row_where", "row_number", "iter_caveats"]

#: Row fields holding a caveat besides any field ending in ``_note``.
CAVEAT_FIELDS = ("note", "problem")
#: Fields holding a row's main estimate, by preference.
_ESTIMATE_FIELDS = ("difference", "slope", "estimate", "psi", "ratio")
#: Lists whose rows are not results rows (per-direction curves, no caveats of their own).
_NOT_ROWS = ("loss_profiles",)


@dataclass(frozen=True)
class Caveat:
    """One caveat: where it is (``table`` and row ``index``; ``where`` in words), the number it
    qualifies (formatted; empty for study-wide notes) and its text."""

    table: str
    index: int | None
    where: str
    number: str
    text: str
    value: float | None = None  #: the raw estimate ``number`` shows (None when there is none)

    def line(self) -> str:
        """``where — number: text`` (the number left out when there is none)."""
        head = self.where + (f" — {self.number}" if self.number else "")
        return f"{head}: {self.text}"


def _is_caveat_field(key: str) -> bool:
    return key in CAVEAT_FIELDS or key.endswith("_note")


def row_caveats(row: Mapping) -> list[str]:
    """The caveat texts a row carries in its own fields (``note``, ``problem``, ``*_note``),
    split on "; " so that each caveat is one entry; refusals and pooled steps not included."""
    out = []
    for k, v in row.items():
        if _is_caveat_field(str(k)) and isinstance(v, str) and v.strip():
            out += [t.strip() for t in v.split("; ") if t.strip()]
    return out


def _side(side) -> str:
    if isinstance(side, Mapping):
        lab = side.get("label")
        if lab is None and isinstance(side.get("group"), Mapping):
            lab = side["group"].get("group")
        src = side.get("source")
        return f"{lab}" + (f":{src}" if src else "")
    return str(side)


def row_where(table: str, row: Mapping) -> str:
    """A row's identity in words: ``groups sgd-lr0.1-bs32:sgd``,
    ``comparisons log_lambda_max dropout-lr0.1-drop0.1 − gd-lr0.1``, ``relations run gd-seed0 …``."""
    parts = [table]
    if row.get("quantity") is not None:
        parts.append(str(row["quantity"]))
    if "group_a" in row or "group_b" in row:
        parts.append(f"{_side(row.get('group_a'))} − {_side(row.get('group_b'))}")
    elif row.get("run_id") is not None:
        parts.append(f"run {row['run_id']}" + (f":{row['source']}" if row.get("source") else ""))
    else:
        lab = row.get("group_label")
        if lab is None:
            g = row.get("group")
            lab = g.get("group") if isinstance(g, Mapping) else g
        if lab is not None:
            parts.append(str(lab) + (f":{row['source']}" if row.get("source") else ""))
        elif row.get("path") is not None:
            parts.append(str(row["path"]))
    if row.get("block") is not None:
        parts.append(f"[{row['block']}]")
    if row.get("step") is not None and table == "relations":
        parts.append(f"step {row['step']}")
    return " ".join(parts)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def row_number(row: Mapping) -> str:
    """The row's main estimate with its CI (``0.94 [0.87, 1.01]``), ``0.94 (no interval)``, or ``no estimate``."""
    for k in _ESTIMATE_FIELDS:
        if k in row:
            est = row.get(k)
            if not _finite(est):
                return "no estimate"
            lo, hi = row.get("ci_low"), row.get("ci_high")
            if _finite(lo) and _finite(hi):
                return format_estimate_ci(est, lo, hi, format_sig)
            return f"{format_sig(est)} (no interval)"
    return ""


def _value(row: Mapping) -> float | None:
    for k in _ESTIMATE_FIELDS:
        if k in row:
            return float(row[k]) if _finite(row.get(k)) else None
    return None


def _refused(row: Mapping) -> bool:
    return "ci_low" in row and "ci_high" in row and not _finite(row.get("ci_low")) and not _finite(row.get("ci_high"))


def _group_key(row: Mapping) -> str:
    lab = row.get("group_label")
    if lab is None:
        g = row.get("group")
        lab = g.get("group") if isinstance(g, Mapping) else g
    key = f"group {lab}" + (f":{row['source']}" if row.get("source") else "")
    return key + (f" (block {row['block']}) " if row.get("block") is not None else " ")


def iter_caveats(results: Mapping) -> Iterator[Caveat]:
    """Every caveat of a results dict (JSON output v1), once each (module docstring).

    A top-level note that names a ``groups`` row (``group LABEL:SOURCE pools runs ...``) is
    given with that row, beside its number, instead of as a study-wide note."""
    notes = [str(n) for n in results.get("notes") or [] if n]
    used: set[int] = set()
    rows_out: list[Caveat] = []
    for table, rows in results.items():
        if table in ("skipped", "notes", "identical") or table in _NOT_ROWS or not isinstance(rows, list):
            continue
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                continue
            texts = row_caveats(row)
            if _refused(row) and not texts:
                texts = ["no interval (no reason recorded in the row)"]
            steps = row.get("steps")
            if table == "groups" and isinstance(steps, list) and len(set(steps)) > 1:
                key = _group_key(row)
                j = next((j for j, n in enumerate(notes) if j not in used and n.startswith(key)), None)
                if j is not None:
                    used.add(j)
                    texts.append(notes[j])
                else:
                    texts.append("pools runs analysed at different steps ("
                                 + ", ".join(map(str, sorted(set(steps)))) + ")")
            if texts:
                where, number = row_where(table, row), row_number(row)
                rows_out += [Caveat(table, i, where, number, t, _value(row)) for t in texts]
    for i, n in enumerate(notes):
        if i not in used:
            yield Caveat("notes", i, "analysis", "", n)
    for i, s in enumerate(results.get("skipped") or []):
        if isinstance(s, Mapping):
            probs = s.get("problems") or [s.get("reason") or "invalid"]
            who = s.get("run_id") or s.get("path")
            for p in probs if isinstance(probs, (list, tuple)) else [probs]:
                yield Caveat("skipped", i, f"skipped run {who}", "", str(p))
            for t in row_caveats(s):
                yield Caveat("skipped", i, f"skipped run {who}", "", t)
        else:
            yield Caveat("skipped", i, "skipped run", "", str(s))
    for i, ids in enumerate(results.get("identical") or []):
        yield Caveat("identical", i, "identical runs", "",
                     "runs " + ", ".join(map(str, ids)) + " have identical noise tables: they are not independent "
                     "replicates")
    yield from rows_out
