"""Turns harness rows into a markdown table, a JSON file and a PNG plot."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["markdown", "plot"]

CEILING = {
    "qsse/1": "raw-aioquic",
    "qsse/1:sdk": "raw-aioquic",
    "qsse/2": "raw-aioquic",
    "qsse/2:light": "raw-aioquic",
    "qsse/1@qh3": "raw-qh3",
    "qsse/2@qh3": "raw-qh3",
    "qsse/2@qh3:light": "raw-qh3",
}
PEERS = ("sse-starlette", "websockets")


def _num(value: float, digits: int = 3) -> str:
    if value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _cell(summary: dict[str, dict[str, float]], key: str, digits: int = 3) -> str:
    s = summary.get(key)
    if not s or not s.get("runs"):
        return "-"
    if s["runs"] == 1:
        return _num(s["median"], digits)
    return f"{_num(s['median'], digits)} [{_num(s['min'], digits)}-{_num(s['max'], digits)}]"


def _median(row: dict[str, Any] | None, key: str) -> float:
    if row is None:
        return float("nan")
    s = row.get("summary", {}).get(key)
    return float(s["median"]) if s and s.get("runs") else float("nan")


def _ratio(a: float, b: float, digits: int = 2) -> str:
    if a != a or b != b or b == 0:
        return "-"
    return f"{a / b:.{digits}f}x"


def _index(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    return {(r["scenario"], r["target"], r["n"], r["mode"]): r for r in rows}


def _failed(row: dict[str, Any]) -> str:
    return f" (failed {len(row['errors'])}x)" if row["errors"] else ""


def markdown(results: dict[str, Any]) -> str:
    """The tables of one harness run, ratios included."""
    rows: list[dict[str, Any]] = results["rows"]
    index = _index(rows)
    out: list[str] = []
    by = lambda scenario: [r for r in rows if r["scenario"] == scenario]  # noqa: E731

    fan = by("fanout")
    if fan:
        out += [
            "### (1) Fan-out at full speed, 1 topic, 200-byte events",
            "",
            "| N | target | events/s delivered | server CPU s / 1k events | server CPU "
            "| x raw ceiling | x sse-starlette | x websockets |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(fan, key=lambda r: (r["n"], r["target"])):
            v = _median(r, "events_s")
            ceiling = CEILING.get(r["target"])
            ceil_row = index.get(("fanout", ceiling, r["n"], "")) if ceiling else None
            peers = [
                _ratio(v, _median(index.get(("fanout", p, r["n"], "")), "events_s"))
                if r["target"].startswith("qsse")
                else ""
                for p in PEERS
            ]
            out.append(
                f"| {r['n']} | {r['target']}{_failed(r)} | {_cell(r['summary'], 'events_s')} "
                f"| {_cell(r['summary'], 'cpu_s_per_1k')} | {_cell(r['summary'], 'server_cpu')} "
                f"| {_ratio(v, _median(ceil_row, 'events_s')) if ceil_row else ''} "
                f"| {peers[0]} | {peers[1]} |"
            )
        out.append("")

    paced = by("paced")
    if paced:
        out += [
            "### (2) Paced 1,000 events/s: publish-to-handler latency (ms)",
            "",
            "| N | target | p50 | p99 | p999 | max | received | server CPU |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(paced, key=lambda r: (r["n"], r["target"])):
            s = r["summary"]
            out.append(
                f"| {r['n']} | {r['target']}{_failed(r)} | {_cell(s, 'p50_ms')} "
                f"| {_cell(s, 'p99_ms')} | {_cell(s, 'p999_ms')} | {_cell(s, 'max_ms')} "
                f"| {_cell(s, 'received')} | {_cell(s, 'server_cpu')} |"
            )
        out.append("")

    mem = by("memory")
    if mem:
        out += [
            "### (3) Idle subscribers held by one server process",
            "",
            "| target | N | held | server memory per subscriber (KiB) | server RSS (MiB) |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in sorted(mem, key=lambda r: (r["target"], r["n"])):
            s = r["summary"]
            out.append(
                f"| {r['target']}{_failed(r)} | {r['n']} | {_cell(s, 'held')} "
                f"| {_cell(s, 'kib_per_sub')} | {_cell(s, 'rss_mib')} |"
            )
        out.append("")

    typed = by("typed")
    if typed:
        out += [
            "### (4) Typed SDK: validate + encode against bare msgspec encode (ns per event)",
            "",
            "| event | JSON bytes | how | ns per event | x bare `msgspec.json.encode` |",
            "|---|---:|---|---:|---:|",
        ]
        for r in typed:
            if r["errors"]:
                out.append(f"| unavailable | | {r['errors'][0]} | | |")
                continue
            s = r["summary"]
            out.append(
                f"| {r['target']} | {r['n']} | {r['mode']} | {_cell(s, 'ns')} "
                f"| {_cell(s, 'ratio_to_bare')} |"
            )
        out.append("")

    hol = by("hol") + by("hol-netem")
    if hol:
        out += [
            "### (5) Head-of-line: 200-byte topic at 100/s beside a 64 KiB topic at 4/s, "
            "one connection (ms)",
            "",
            "| link | target | small p50 | small p99 | small p999 | big p50 | big p99 "
            "| small received |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(hol, key=lambda r: (r["mode"], r["target"])):
            s = r["summary"]
            out.append(
                f"| {r['mode']} | {r['target']}{_failed(r)} | {_cell(s, 'p50_ms')} "
                f"| {_cell(s, 'p99_ms')} | {_cell(s, 'p999_ms')} | {_cell(s, 'big_p50_ms')} "
                f"| {_cell(s, 'big_p99_ms')} | {_cell(s, 'received')} |"
            )
        out.append("")
    errors = [r for r in rows if r["errors"]]
    if errors:
        out += ["Failed runs:", ""]
        for r in errors:
            out.append(f"- {r['scenario']} {r['target']} N={r['n']}: {r['errors'][0][:300]}")
        out.append("")
    return "\n".join(out)


def plot(results: dict[str, Any], path: str) -> bool:
    """Throughput, CPU per event and paced p99 latency against N; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows: list[dict[str, Any]] = results["rows"]
    panels = [
        ("fanout", "events_s", "Fan-out: events/s delivered", "events/s"),
        ("fanout", "cpu_s_per_1k", "Fan-out: server CPU s per 1k events", "CPU s / 1k"),
        ("paced", "p99_ms", "Paced 1k ev/s: p99 latency", "ms (p50 dotted)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    # One colour per target across the panels, whatever subset each panel holds.
    names = sorted({r["target"] for r in rows})
    # tab10 repeats after ten targets; tab20 gives up to twenty distinct ones.
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colours = {name: palette(i % palette.N) for i, name in enumerate(names)}
    for ax, (scenario, key, title, ylabel) in zip(axes, panels, strict=True):
        targets = sorted({r["target"] for r in rows if r["scenario"] == scenario})
        for target in targets:
            series = sorted(
                (r for r in rows if r["scenario"] == scenario and r["target"] == target),
                key=lambda r: r["n"],
            )
            xs, ys, lo, hi = [], [], [], []
            for r in series:
                s = r["summary"].get(key)
                if not s or not s.get("runs"):
                    continue
                xs.append(r["n"])
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            if not xs:
                continue
            line = ax.errorbar(
                xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=target, color=colours[target]
            )
            if key == "p99_ms":
                p50 = [r["summary"]["p50_ms"]["median"] for r in series if "p50_ms" in r["summary"]]
                if len(p50) == len(xs):
                    ax.plot(xs, p50, linestyle=":", color=line[0].get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("subscribers (N)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def finite(value: float) -> float | None:
    """JSON has no NaN: None instead."""
    return value if isinstance(value, float) and math.isfinite(value) else None
