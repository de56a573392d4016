"""Render a :class:`~imgaccel.bench.results.Report` as JSON, a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from imgaccel.bench.cpu import KINDS
from imgaccel.bench.results import Report, ScenarioResult, bound_seconds, mbit_to_bytes_per_s

MB = 1_000_000

_HEADER = (
    "| scenario | N | pull median (s) | pull max (s) | median / bound | max / bound "
    "| origin sent (MB) | origin / S | notes |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _notes(result: ScenarioResult, cores: int) -> str:
    notes = []
    if result.status != "ok":
        reason = result.reason or result.status
        notes.append(reason if reason.startswith(result.status) else f"{result.status}: {reason}")
    bypassed = sum(r.bypassed for r in result.repeats)
    if bypassed:
        notes.append(f"{bypassed} blob GETs bypassed the mirror")
    warm = [r.warmup_origin_bytes for r in result.repeats if r.warmup_origin_bytes]
    if warm:
        notes.append(f"warm-up took {max(warm) / MB:.1f} MB from the origin")
    took = [r.warmup_seconds for r in result.repeats if r.warmup_seconds]
    if took:
        worst = max(took)
        notes.append(f"warm-up {worst:.1f} s = {worst / result.bound_seconds:.2f} × bound")
    most = [max(r.node_sent.values()) for r in result.repeats if r.node_sent]
    if most and max(most) >= result.image_bytes / 10:  # below that: requests and acks only
        notes.append(f"the busiest node sent {max(most) / result.image_bytes:.2f} × S")
    if cpu_note := _cpu(result, cores):
        notes.append(cpu_note)
    return "; ".join(notes).replace("|", "/")


def _cpu(result: ScenarioResult, cores: int) -> str | None:
    """How busy the machine's cores were during the pull, and whose CPU-seconds those were
    (means over the repeats that recorded them)."""
    measured = [r for r in result.repeats if r.cpu_seconds]
    if not measured:
        return None

    def mean(name: str) -> float:
        return sum(r.cpu_seconds.get(name, 0.0) for r in measured) / len(measured)

    wall = sum(max(r.pull_seconds.values()) for r in measured) / len(measured)
    kinds = ", ".join(f"{kind} {mean(kind):.1f}" for kind in KINDS if mean(kind) >= 0.05)
    return (
        f"CPU {mean('machine'):.0f} CPU-s = {mean('machine') / (cores * wall):.0%} of "
        f"{cores} cores ({kinds})"
    )


def _row(result: ScenarioResult, cores: int) -> str:
    sent = result.origin_bytes
    cells = (
        result.scenario,
        str(result.nodes),
        _num(result.median_seconds, ".1f"),
        _num(result.max_seconds, ".1f"),
        _num(result.time_ratio, ".2f"),
        _num(result.max_time_ratio, ".2f"),
        _num(None if sent is None else sent / MB, ".1f"),
        _num(result.bytes_ratio, ".2f"),
        _notes(result, cores),
    )
    return "| " + " | ".join(cells) + " |"


def markdown(report: Report) -> str:
    p = report.params
    bound = bound_seconds(report.image_bytes, p.origin_mbit, p.node_mbit)
    node = report.image_bytes / mbit_to_bytes_per_s(p.node_mbit)
    lines = [
        f"Image S = {report.image_bytes / MB:.1f} MB, origin {p.origin_mbit:g} Mbit/s, "
        f"nodes {p.node_mbit:g} Mbit/s, proxy {p.proxy_mbit:g} Mbit/s, "
        f"{p.repeat} repeat(s), {'unpack included' if p.unpack else 'transfer only (no unpack)'}; "
        f"bound S/B_origin + S/B_node = {bound:.1f} s (S/B_node = {node:.1f} s).",
        "",
        _HEADER,
        *(_row(r, report.cores) for r in report.results),
    ]
    if report.notes:
        lines += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"


def chart(report: Report, path: Path) -> None:
    """Pull time and origin bytes against N, one line per scenario that ran."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (times, sent) = plt.subplots(1, 2, figsize=(11, 4.5))
    ran = [r for r in report.results if r.status == "ok"]
    for name in dict.fromkeys(r.scenario for r in ran):
        rows = sorted((r for r in ran if r.scenario == name), key=lambda r: r.nodes)
        ns = [r.nodes for r in rows]
        line = times.plot(ns, [r.median_seconds for r in rows], marker="o", label=name)[0]
        times.plot(
            ns, [r.max_seconds for r in rows], marker="v", linestyle=":", color=line.get_color()
        )
        sent.plot(ns, [(r.origin_bytes or 0) / MB for r in rows], marker="o", label=name)
    p = report.params
    times.axhline(
        bound_seconds(report.image_bytes, p.origin_mbit, p.node_mbit),
        color="grey",
        linestyle="--",
        label="bound",
    )
    times.set(
        xlabel="nodes pulling at once (N)",
        ylabel="pull time (s; ○ median, ▽ max)",
        title="Pull time",
    )
    sent.set(
        xlabel="nodes pulling at once (N)", ylabel="MB sent by the origin", title="Origin egress"
    )
    sent.axhline(report.image_bytes / MB, color="grey", linestyle="--", label="S")
    for ax in (times, sent):
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({r.nodes for r in report.results}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"results.{kind}" for kind in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report.as_json(), indent=2) + "\n")
    paths["md"].write_text(markdown(report))
    chart(report, paths["png"])
    return paths
