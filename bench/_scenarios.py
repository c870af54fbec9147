"""The scenarios: which runs make up each, and the figures drawn from a run's results."""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ._common import CertFiles, percentile
from ._harness import RunError, RunSpec, client_kind, run_once, split_target
from ._micro import typed_cases
from ._profile import summarize_profile

__all__ = ["Config", "run_scenarios", "summarize"]

SCENARIOS = ("fanout", "paced", "memory", "typed", "hol", "hol-netem")


@dataclass
class Config:
    """What a whole harness run measures; the presets are ``full``, ``quick`` and ``smoke``."""

    targets: list[str]
    scenarios: list[str]
    certs: CertFiles
    loop: str = "uvloop"
    repeats: int = 3
    fanout_n: list[int] = field(default_factory=lambda: [1, 10, 100])
    fanout_duration: float = 3.0
    fanout_warmup: float = 1.0
    paced_n: list[int] = field(default_factory=lambda: [1, 10, 100])
    paced_rate: float = 1000.0
    paced_duration: float = 3.0
    memory_n: list[int] = field(default_factory=lambda: [1000, 5000])
    memory_targets: list[str] | None = None
    hol_duration: float = 6.0
    hol_netem_duration: float = 20.0
    typed_calls: int = 20_000
    size: int = 200
    processes: int = 4
    pin: bool = True
    netem_ns: tuple[str, str] = ("qlsrv", "qlcli")
    #: when set, every server runs under py-spy and its summary lands in this directory.
    profile_dir: str | None = None


def _interp(samples: list[list[int]], t: int) -> float:
    """Events counted at time ``t``, interpolated between the subscriber's samples."""
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return float(samples[0][1])
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / max(1, t1 - t0)
    return float(samples[-1][1])


def fanout_figures(result: dict[str, Any]) -> dict[str, float]:
    server = result["server"]
    t_start, t_end = server["t_start"], server["t_end"]
    delivered = sum(
        _interp(sub["samples"], t_end) - _interp(sub["samples"], t_start)
        for sub in result["subscribers"]
    )
    window = (t_end - t_start) / 1e9
    return {
        "events_s": delivered / window,
        "cpu_s_per_1k": server["cpu"] / max(delivered / 1000, 1e-9),
        "server_cpu": server["cpu"] / window,
        "published_s": server["published"] / window,
    }


def _latencies(result: dict[str, Any], topic: str) -> list[int]:
    out: list[int] = []
    for sub in result["subscribers"]:
        out += sub["latencies"].get(topic, [])
    out.sort()
    return out


def latency_figures(result: dict[str, Any], topic: str, n: int) -> dict[str, float]:
    server = result["server"]
    lat = _latencies(result, topic)
    expected = server["published"][topic] * n
    return {
        "p50_ms": percentile(lat, 0.50) / 1000,
        "p99_ms": percentile(lat, 0.99) / 1000,
        "p999_ms": percentile(lat, 0.999) / 1000,
        "max_ms": (lat[-1] / 1000) if lat else float("nan"),
        "received": len(lat) / max(expected, 1),
        "server_cpu": server["cpu"] / server["elapsed"],
    }


def memory_figures(result: dict[str, Any], n: int) -> dict[str, float]:
    server = result["server"]
    return {
        "held": float(server["held"]),
        "kib_per_sub": (server["rss_after"] - server["rss_before"]) / n / 1024,
        "rss_mib": server["rss_after"] / 2**20,
    }


def summarize(values: list[float]) -> dict[str, float]:
    """Median and range of the runs that produced a figure."""
    clean = [v for v in values if v == v]
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": 0}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": len(clean),
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _measure(
    spec: RunSpec,
    figures: Callable[[dict[str, Any]], dict[str, float]],
    profile_dir: str | None = None,
) -> dict[str, float] | str:
    started = time.monotonic()
    if profile_dir is not None:
        name = f"{spec.workload}-{spec.target}-n{spec.n}".replace("/", "").replace(":", "-")
        spec = replace(spec, profile=os.path.join(profile_dir, name + ".raw"))
    try:
        values = figures(await run_once(spec))
    except (RunError, KeyError, ValueError) as exc:
        _log(f"  {spec.workload} {spec.target} n={spec.n}: FAILED {exc}")
        return str(exc)[:500]
    if spec.profile is not None and os.path.exists(spec.profile):
        with open(spec.profile.removesuffix(".raw") + ".txt", "w") as f:
            f.write(summarize_profile(spec.profile))
    shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
    took = time.monotonic() - started
    _log(f"  {spec.workload} {spec.target} n={spec.n}: {shown} ({took:.1f} s)")
    return values


def _new_row(scenario: str, target: str, n: int, mode: str = "") -> dict[str, Any]:
    return {"scenario": scenario, "target": target, "n": n, "mode": mode, "runs": [], "errors": []}


def _distinct(targets: list[str], workload: str) -> list[str]:
    """``targets`` without forced-client variants that equal a plain target's default."""
    seen: set[tuple[str, str]] = set()
    out: list[str] = []
    for target in sorted(targets, key=lambda t: ":" in t):
        key = (split_target(target)[0], client_kind(target, workload))
        if key not in seen:
            seen.add(key)
            out.append(target)
    return [t for t in targets if t in out]


async def run_scenarios(config: Config) -> dict[str, Any]:
    """Run every selected scenario; rows hold each run's figures and their summary."""
    rows: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    base = RunSpec(
        target="",
        workload="",
        n=1,
        certs=config.certs,
        loop=config.loop,
        processes=config.processes,
        pin=config.pin,
    )

    async def record(
        key: tuple[str, str, int, str],
        spec: RunSpec,
        figures: Callable[[dict[str, Any]], dict[str, float]],
    ) -> None:
        row = rows.setdefault(key, _new_row(*key))
        value = await _measure(spec, figures, config.profile_dir)
        if isinstance(value, str):
            row["errors"].append(value)
        else:
            row["runs"].append(value)

    # Repeats are the outer loop so that a burst of noise spreads over every target.
    for repeat in range(config.repeats):
        _log(f"repeat {repeat + 1}/{config.repeats}")
        if "fanout" in config.scenarios:
            for n in config.fanout_n:
                for target in config.targets:
                    spec = replace(
                        base,
                        target=target,
                        workload="fanout",
                        n=n,
                        server_args={
                            "duration": config.fanout_duration,
                            "warmup": config.fanout_warmup,
                            "size": config.size,
                        },
                    )
                    await record(("fanout", target, n, ""), spec, fanout_figures)
        if "paced" in config.scenarios:
            for n in config.paced_n:
                for target in _distinct(config.targets, "paced"):
                    spec = replace(
                        base,
                        target=target,
                        workload="paced",
                        n=n,
                        latency=True,
                        server_args={
                            "duration": config.paced_duration,
                            "rate": config.paced_rate,
                            "size": config.size,
                        },
                    )
                    await record(
                        ("paced", target, n, ""),
                        spec,
                        lambda r, n=n: latency_figures(r, "bench", n),  # type: ignore[misc]
                    )
        for mode in ("hol", "hol-netem"):
            if mode not in config.scenarios:
                continue
            netem = mode == "hol-netem"
            for target in _distinct(config.targets, "hol"):
                spec = replace(
                    base,
                    target=target,
                    workload="hol",
                    n=1,
                    processes=1,
                    latency=True,
                    topics="small,big",
                    host="10.78.0.1" if netem else "127.0.0.1",
                    server_ns=config.netem_ns[0] if netem else None,
                    client_ns=config.netem_ns[1] if netem else None,
                    server_args={
                        "duration": config.hol_netem_duration if netem else config.hol_duration,
                        "rate": 100,
                        "size": config.size,
                        "drain": 2.0 if netem else 0.3,
                    },
                    timeout=180.0,
                )

                def hol(r: dict[str, Any]) -> dict[str, float]:
                    small = latency_figures(r, "small", 1)
                    big = latency_figures(r, "big", 1)
                    return {**small, "big_p50_ms": big["p50_ms"], "big_p99_ms": big["p99_ms"]}

                await record((mode, target, 1, "netem" if netem else "loopback"), spec, hol)
    # Memory is near deterministic and slow to set up: one run per level.
    if "memory" in config.scenarios:
        # raw-qh3 is in: it is the ceiling of qsse on qh3.
        plain = [t for t in config.targets if ":" not in t]
        for target in config.memory_targets or plain:
            for n in config.memory_n:
                spec = replace(
                    base,
                    target=target,
                    workload="idle",
                    n=n,
                    server_args={"settle": 2.0, "subscribe_timeout": 60 + n * 0.03},
                    timeout=300.0,
                )
                await record(
                    ("memory", target, n, ""),
                    spec,
                    lambda r, n=n: memory_figures(r, n),  # type: ignore[misc]
                )
    if "typed" in config.scenarios:
        for repeat in range(config.repeats):
            for case in typed_cases(config.typed_calls):
                if "error" in case:
                    key = ("typed", "unavailable", 0, "")
                    row = rows.setdefault(key, _new_row(*key))
                    row["errors"].append(case["error"])
                    continue
                key = ("typed", case["event"], case["bytes"], case["case"])
                row = rows.setdefault(key, _new_row(*key))
                row["runs"].append({"ns": case["ns"], "ratio_to_bare": case["ratio_to_bare"]})
            _log(f"  typed repeat {repeat + 1} done")
    for row in rows.values():
        names = sorted({k for run in row["runs"] for k in run})
        row["summary"] = {k: summarize([run[k] for run in row["runs"] if k in run]) for k in names}
    return {"rows": list(rows.values())}
