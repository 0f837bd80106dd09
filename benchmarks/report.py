"""What every benchmark shares: the command line, the table and the JSON file.

Each `benchmarks/bench_<topic>.py` only measures (`run(quick=False, **options) -> list[dict]`);
`main()` here gives it `--quick` and `--json FILE`, and `dualpm bench` prints the same table.
A row holds name, value, unit, and optionally peer/peer_value/ratio, limit/pass or target.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from dualpm_addon import atomic


def machine() -> dict:
    """Where the figures came from, with the load at the time (the machine may be shared)."""
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def _extra(r: dict) -> str:
    if "limit" in r:
        return f"limit {r['limit']}: {'pass' if r.get('pass') else 'FAIL'}"
    if "peer" in r:
        return f"{r['peer']} {r.get('peer_value', '')}, x{r.get('ratio', '')}"
    if "peer_value" in r:
        return f"baseline {r['peer_value']}"
    if "target" in r:
        return f"target {r['target']}, x{r.get('ratio', '')}"
    return ""


def table(rows: list[dict], topic: str | None = None) -> list[str]:
    """Aligned lines: [topic] name, value, unit, and the peer, limit or target beside it."""
    width = max([len(str(r.get("name", ""))) for r in rows] + [9])
    lines = []
    for r in rows:
        v = r.get("value")
        value = f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
        lead = f"{topic:9s} " if topic else ""
        lines.append(f"{lead}{str(r.get('name', '')):<{width}}  {value:>10}  {str(r.get('unit', '')):<10}  {_extra(r)}".rstrip())
    return lines


def write_json(path: str, payload) -> None:
    """Atomic, so an interrupted run never leaves a report that looks complete."""
    atomic.write_json(path, payload, default=str)


def main(run, description: str, argv=None, options: dict | None = None) -> int:
    """`python benchmarks/bench_<topic>.py [--quick] [--json FILE] [options]`; exit 1 if a limit fails."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, metavar="FILE")
    for flag, kwargs in (options or {}).items():
        p.add_argument(f"--{flag}", **kwargs)
    a = p.parse_args(argv)
    if a.json:  # before minutes of measuring, not after
        folder = os.path.dirname(os.path.abspath(a.json))
        if not os.path.isdir(folder):
            p.error(f"--json {a.json}: the folder {folder} does not exist")
    rows = run(quick=a.quick, **{k.replace("-", "_"): getattr(a, k.replace("-", "_")) for k in (options or {})})
    print("\n".join(table(rows)))
    if rows and "machine" in rows[0]:
        print(f"machine: {rows[0]['machine']}")
    if a.json:
        write_json(a.json, {"machine": machine(), "rows": rows})
    return 0 if all(r.get("pass", True) for r in rows) else 1
