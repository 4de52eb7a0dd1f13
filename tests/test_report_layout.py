"""The report leads with the answer: findings (groups, comparisons, forest plot) before the other
tables, a design statement, and wide tables in scrollable boxes (issue 11 item 3)."""

from __future__ import annotations

from test_report import write_fixture  # the shared results fixture of the report tests

from varprinciple.report import build_report


def test_html_and_markdown_lead_with_findings(tmp_path):
    path = write_fixture(tmp_path)
    res = build_report(path, tmp_path / "out", formats="md,html", dpi=40)
    text = res.html.read_text()
    pos = {k: text.index(k) for k in ('id="findings"', 'id="vp-table-groups"' if 'id="vp-table-groups"' in text
                                      else "Exponent b per group", 'id="figure-forest"', 'id="tables"',
                                      "Per-run relation", 'id="design"', 'id="vp-command"')}
    order = sorted(pos, key=pos.get)
    assert order[0] == 'id="findings"' and order[-1] == 'id="vp-command"', order
    assert pos['id="figure-forest"'] < pos['id="tables"'] < pos["Per-run relation"] < pos['id="design"']
    # wide tables scroll inside their box, with a sticky header
    assert "div.vp-wrap{overflow:auto;max-width:100%;max-height:75vh}" in text and "position:sticky" in text
    # the design statement names replicates, randomisation, margin, multiplicity and exclusions
    for key in ("Replicates", "Randomised", "Equivalence margin", "Multiplicity", "Exclusions"):
        assert f"<dt>{key}</dt>" in text
    md = res.path("page", "report", "md").read_text()
    assert md.index("## Findings") < md.index("### Exponent b per group") < md.index("## More tables") \
        < md.index("## Design") < md.index("## Command")
