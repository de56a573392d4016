"""JSON, Markdown and PNG renderings of a report."""

from __future__ import annotations

import json
from pathlib import Path

from imgaccel.bench.report import markdown, write_all
from imgaccel.bench.results import Params, Repeat, Report, ScenarioResult, bound_seconds

S = 100_000_000


def _report() -> Report:
    params = Params(nodes=(2, 4), image_bytes=S, scenarios=("direct", "proxy", "imgaccel-prewarm"))
    bound = bound_seconds(S, params.origin_mbit, params.node_mbit)
    report = Report(params, S, notes=["imgaccel-cold: nodes start with --tracker"])
    for n in params.nodes:
        times = {f"n{i}": 4.0 + i for i in range(n)}
        report.results += [
            ScenarioResult("direct", n, S, bound, repeats=[Repeat(times, n * S)]),
            ScenarioResult("proxy", n, S, bound, repeats=[Repeat(times, S, bypassed=1)]),
            ScenarioResult(
                "imgaccel-prewarm",
                n,
                S,
                bound,
                status="skipped",
                reason="skipped: imgaccel prewarm not available",
            ),
        ]
    return report


def test_markdown_has_a_row_per_scenario_and_n_with_figures_and_reasons() -> None:
    text = markdown(_report())
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 6
    direct_4 = next(r for r in rows if r.startswith("| direct | 4 |"))
    cells = [c.strip() for c in direct_4.strip("|").split("|")]
    assert cells[2:4] == ["5.5", "7.0"]  # median, max of 4,5,6,7 s
    assert cells[6:8] == ["400.0", "4.00"]  # origin MB, origin / S
    assert "skipped: imgaccel prewarm not available |" in text
    assert "skipped: skipped" not in text
    assert "1 blob GETs bypassed the mirror" in text
    assert "bound S/B_origin + S/B_node = 5.0 s (S/B_node = 1.0 s)" in text
    assert "- imgaccel-cold: nodes start with --tracker" in text


def test_write_all_writes_parseable_json_markdown_and_a_png(tmp_path: Path) -> None:
    paths = write_all(_report(), tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["bound_seconds"] == 5.0
    assert [(r["scenario"], r["nodes"], r["status"]) for r in data["results"]][:3] == [
        ("direct", 2, "ok"),
        ("proxy", 2, "ok"),
        ("imgaccel-prewarm", 2, "skipped"),
    ]
    assert data["results"][0]["origin_bytes"] == 2 * S
    assert paths["md"].read_text() == markdown(_report())
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_a_timed_warm_up_is_reported_against_the_bound() -> None:
    params = Params(nodes=(4,), image_bytes=S, scenarios=("imgaccel-prewarm",))
    bound = bound_seconds(S, params.origin_mbit, params.node_mbit)
    job = Repeat({"n1": 1.0}, 0, warmup_origin_bytes=S, warmup_seconds=6.0)
    report = Report(params, S, [ScenarioResult("imgaccel-prewarm", 4, S, bound, repeats=[job])])
    row = next(line for line in markdown(report).splitlines() if "imgaccel-prewarm" in line)
    assert "warm-up took 100.0 MB from the origin; warm-up 6.0 s = 1.20 × bound" in row


def test_the_busiest_node_s_upload_is_reported_against_s() -> None:
    params = Params(nodes=(4,), image_bytes=S, scenarios=("imgaccel-warm",))
    bound = bound_seconds(S, params.origin_mbit, params.node_mbit)
    sent = {"n1": S * 6 // 5, "n2": S // 2, "n3": S // 3, "n4": 1_000}
    warm = Repeat({"n1": 1.0, "n2": 5.0}, 0, node_sent=sent)
    quiet = Repeat({"n1": 1.0, "n2": 5.0}, S, node_sent={"n1": S // 20, "n2": 1_000})
    report = Report(
        params,
        S,
        [
            ScenarioResult("imgaccel-warm", 4, S, bound, repeats=[warm]),
            ScenarioResult("direct", 4, S, bound, repeats=[quiet]),
        ],
    )
    rows = {line.split("|")[1].strip(): line for line in markdown(report).splitlines()[3:]}
    assert "the busiest node sent 1.20 × S" in rows["imgaccel-warm"]
    assert "busiest" not in rows["direct"]


def test_the_cpu_spent_during_the_pull_is_reported_by_kind() -> None:
    params = Params(nodes=(2,), image_bytes=S, scenarios=("imgaccel-cold",))
    bound = bound_seconds(S, params.origin_mbit, params.node_mbit)
    used = [
        {"machine": 30.0, "imgaccel": 9.0, "containerd": 6.0, "ctr": 3.0, "registry": 0.02},
        {"machine": 20.0, "imgaccel": 7.0, "containerd": 4.0, "ctr": 1.0, "registry": 0.0},
    ]
    repeats = [Repeat({"n1": 9.0, "n2": 10.0}, S, cpu_seconds=cpu) for cpu in used]
    report = Report(
        params,
        S,
        [
            ScenarioResult("imgaccel-cold", 2, S, bound, repeats=repeats),
            ScenarioResult("direct", 2, S, bound, repeats=[Repeat({"n1": 9.0}, S)]),
        ],
        cores=2,
    )
    rows = {line.split("|")[1].strip(): line for line in markdown(report).splitlines()[3:]}
    # Means over the repeats: 25 CPU-s of 2 cores x 10 s; a kind under 0.05 CPU-s is left out.
    assert (
        "CPU 25 CPU-s = 125% of 2 cores (imgaccel 8.0, containerd 5.0, ctr 2.0)"
        in (rows["imgaccel-cold"])
    )
    assert "CPU" not in rows["direct"]  # a run from before the CPU was counted
