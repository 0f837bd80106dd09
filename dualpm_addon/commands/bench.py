"""`dualpm bench [--json FILE] [--only NAME...] [--quick]`: run every benchmark, print one table,
write the rows as JSON.

Benchmarks live in the development checkout's `benchmarks/bench_<topic>.py`, each exposing
`run(quick=False) -> list[dict]` (name, value, unit, and peer/peer_value/ratio where the issue
names a peer). They are imported by name, so the core never depends on them.
"""

from __future__ import annotations

import glob
import importlib
import os
import platform
import sys
import time

from ..errors import DualPMError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(parser) -> None:
    parser.add_argument("--json", default=None, help="write the rows here (default: bench.json)")
    parser.add_argument("--only", nargs="*", default=None, help="topics to run (bvh, server, synth, fit, ...)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")


def topics() -> list[str]:
    return sorted(os.path.basename(p)[len("bench_"):-3] for p in glob.glob(os.path.join(ROOT, "benchmarks", "bench_*.py")))


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} {platform.processor() or ''}".strip()


def run(args) -> int:
    found = topics()
    if not found:
        raise DualPMError("no benchmarks/ folder here: benchmarks run from a development checkout")
    chosen = args.only or found
    unknown = [t for t in chosen if t not in found]
    if unknown:
        raise DualPMError(f"unknown benchmark {', '.join(unknown)}; one of: {', '.join(found)}")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    report = {"machine": machine(), "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M"),
              "rows": []}
    failed = 0
    for i, topic in enumerate(chosen):
        print(f"[{i + 1}/{len(chosen)}] {topic} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{topic}")
            rows = module.run(quick=args.quick)
        except Exception as e:  # one broken benchmark must not hide the others' figures
            failed += 1
            print(f"  {topic} failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        for r in rows:
            report["rows"].append({"topic": topic, **r})
    from benchmarks import report as table_report  # noqa: PLC0415 - development checkout only

    for topic in chosen:
        rows = [r for r in report["rows"] if r["topic"] == topic]
        if rows:
            print("\n".join(table_report.table(rows, topic)))
    path = args.json or "bench.json"
    table_report.write_json(path, report)
    print(f"wrote {path}", file=sys.stderr)
    return failed
