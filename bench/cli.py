"""``python -m bench``: run the scenarios and write the table, JSON and plot.

Examples::

    python -m bench                        # everything but the netem mode (~15 min)
    python -m bench --quick                # one repeat, short runs (~4 min)
    python -m bench --scenarios fanout,paced --targets qsse/1,raw-aioquic
    python -m bench --scenarios hol-netem  # needs root: lossy link between namespaces
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import inspect
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from ._common import write_certificate
from ._netem import NetemLink, default_tool
from ._report import markdown, plot
from ._scenarios import SCENARIOS, Config, run_scenarios

__all__ = ["main"]

ALL_TARGETS = (
    "qsse/2",
    "qsse/1",
    "qsse/1:sdk",
    "qsse/2@qh3",
    "qsse/1@qh3",
    "qsse/2:light",
    "qsse/2@qh3:light",
    "raw-aioquic",
    "raw-qh3",
    "sse-starlette",
    "websockets",
)
DEFAULT_SCENARIOS = ("fanout", "paced", "memory", "typed", "hol")


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def qsse2_available() -> bool:
    """Whether this qsse_core's Client can be asked for qsse/2."""
    from qsse_core import Client

    return "protocols" in inspect.signature(Client).parameters


def _target_notes(targets: list[str]) -> tuple[list[str], list[str]]:
    kept: list[str] = []
    notes: list[str] = []
    for target in targets:
        if target.startswith("qsse/2") and not qsse2_available():
            notes.append("qsse/2: not run, this qsse_core's Client has no protocols= option yet")
        elif "qh3" in target and not _installed("qh3"):
            notes.append(f"{target}: not run, qh3 is not installed (pip install qsse[bench])")
        elif target == "sse-starlette" and not _installed("sse_starlette"):
            notes.append("sse-starlette: not run, not installed (pip install qsse[bench])")
        elif target == "websockets" and not _installed("websockets"):
            notes.append("websockets: not run, not installed (pip install qsse[bench])")
        else:
            kept.append(target)
    return kept, notes


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in (
        "qsse",
        "aioquic",
        "qh3",
        "msgspec",
        "uvloop",
        "sse-starlette",
        "uvicorn",
        "starlette",
        "httptools",
        "websockets",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    return [int(v) for v in _csv(value)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="one repeat, shorter runs")
    preset.add_argument("--smoke", action="store_true", help="tiny sizes; checks the harness")
    parser.add_argument(
        "--scenarios",
        type=_csv,
        default=list(DEFAULT_SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}; hol-netem is opt-in",
    )
    parser.add_argument(
        "--targets", type=_csv, default=list(ALL_TARGETS), help=", ".join(ALL_TARGETS)
    )
    parser.add_argument(
        "--memory-targets", type=_csv, default=None, help="targets of the memory scenario"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if _installed("uvloop") else "asyncio",
        help="event loop of the server processes",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--fanout-n", type=_ints, default=None)
    parser.add_argument("--paced-n", type=_ints, default=None)
    parser.add_argument("--memory-n", type=_ints, default=None)
    parser.add_argument("--processes", type=int, default=4, help="subscriber processes per run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    parser.add_argument("--netem-tool", default=default_tool())
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="run every server under py-spy; collapsed stacks and summaries go to DIR",
    )
    parser.add_argument(
        "--merge-into",
        default=None,
        metavar="DIR",
        help="replace the matching rows of DIR/results.json with this run's and re-render",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default bench/results/<UTC time>/, which git ignores)",
    )
    return parser


def config_from(args: argparse.Namespace, targets: list[str]) -> Config:
    certs = write_certificate()
    config = Config(
        targets=targets,
        scenarios=args.scenarios,
        certs=certs,
        loop=args.loop,
        processes=args.processes,
        pin=not args.no_pin,
        memory_targets=args.memory_targets,
        profile_dir=args.profile,
    )
    if args.profile is not None:
        os.makedirs(args.profile, exist_ok=True)
    if args.quick:
        config.repeats = 1
        config.fanout_duration = 2.0
        config.fanout_warmup = 0.5
        config.paced_n = [10]
        config.paced_duration = 2.0
        config.memory_n = [1000]
        config.hol_duration = 5.0
        config.hol_netem_duration = 10.0
        config.typed_calls = 5000
    if args.smoke:
        config.repeats = 1
        config.fanout_n = [1, 2]
        config.fanout_duration = 0.3
        config.fanout_warmup = 0.2
        config.paced_n = [2]
        config.paced_rate = 200.0
        config.paced_duration = 0.3
        config.memory_n = [3]
        config.hol_duration = 0.5
        config.typed_calls = 100
        config.processes = 2
    if args.repeats is not None:
        config.repeats = args.repeats
    if args.fanout_n is not None:
        config.fanout_n = args.fanout_n
    if args.paced_n is not None:
        config.paced_n = args.paced_n
    if args.memory_n is not None:
        config.memory_n = args.memory_n
    return config


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the harness; returns what it wrote to ``results.json``."""
    args = build_parser().parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    targets, notes = _target_notes(args.targets)
    config = config_from(args, targets)
    started = datetime.datetime.now(datetime.UTC)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", started.strftime("%Y%m%dT%H%M%SZ")
    )
    os.makedirs(out, exist_ok=True)
    link_counters = ""
    if "hol-netem" in config.scenarios:
        runs = len(config.targets) * config.repeats
        link = NetemLink(args.netem_tool, max_time=runs * (config.hol_netem_duration + 30) + 60)
        with link:
            results = asyncio.run(run_scenarios(config))
        link_counters = link.counters
    else:
        results = asyncio.run(run_scenarios(config))
    config_dict = asdict(config)
    config_dict.pop("certs")
    results["meta"] = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "config": config_dict,
        "notes": notes,
        "netem_counters": link_counters,
    }
    if args.merge_into is not None:
        out = args.merge_into
        with open(os.path.join(out, "results.json")) as f:
            previous = json.load(f)
        key = lambda r: (r["scenario"], r["target"], r["n"], r["mode"])  # noqa: E731
        fresh = {key(r) for r in results["rows"]}
        results["rows"] = [r for r in previous["rows"] if key(r) not in fresh] + results["rows"]
        # Every merge is kept: a report may be topped up more than once.
        merged = previous["meta"].get("merged", [])
        merged = [merged] if isinstance(merged, dict) else list(merged)
        results["meta"] = {**previous["meta"], "merged": [*merged, results["meta"]]}
        notes = previous["meta"].get("notes", [])
    table = markdown(results)
    if notes:
        table += "\nNotes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=lambda v: None, allow_nan=False)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    plotted = plot(results, os.path.join(out, "plot.png"))
    print(table)
    print(f"wrote {out}/results.json, results.md" + (", plot.png" if plotted else ""))
    return results
