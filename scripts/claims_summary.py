"""Print the README's claims summary (one row per claim) from a study's claims.json.

    .venv/bin/python scripts/claims_summary.py reports/replication/claims.json

Every row of the full table (estimate, CI, Holm p, verdict per experiment and group) is in the
study's report.md; this condenses it to: claim, quantity, what is claimed, the number of units
(experiment x group [x block] rows), the range of the estimates and the verdict counts.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from varprinciple.report.format import format_sig


def claimed(row: dict) -> str:
    null = f"{row['null']:g}"
    if row["kind"] == "greater":
        return f"> {null}"
    if row["kind"] == "less":
        return f"< {null}"
    return f"{null} ± {row['margin']:g}"


def summary(claims: list[dict]) -> str:
    order: dict[str, list[dict]] = {}
    for r in claims:
        order.setdefault(r["claim_id"], []).append(r)
    lines = ["| claim | quantity | claimed | units | estimates (range) | verdicts |",
             "|---|---|---|---|---|---|"]
    for rows in order.values():
        est = [r["estimate"] for r in rows if r["estimate"] is not None]
        rng = "—" if not est else (format_sig(est[0]) if len(est) == 1
                                   else f"{format_sig(min(est))} … {format_sig(max(est))}")
        counts = Counter(r["verdict_text"] for r in rows)
        verdicts = ", ".join(f"{n} {v}" for v, n in counts.most_common())
        r0 = rows[0]
        lines.append(f"| {r0['claim']} | {r0['quantity']} | {claimed(r0)} | {len(rows)} | {rng} | {verdicts} |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/replication/claims.json"
    with open(path, encoding="utf-8") as fh:
        print(summary(json.load(fh)["claims"]))
