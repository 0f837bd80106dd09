"""Synthesis throughput: samples per second at 160x160 with K = 4 layers (target: 20 per core).

Three figures:
* one process calling Synthesizer.sample (what a DataLoader worker does), per wall-clock second
  and per CPU second of that process (on a machine shared with other work the second is the
  fairer per-core figure; the load average is recorded with it), with the time per stage;
* the same plus the compressed, deterministic .npz write of `dualpm synth`;
* `dualpm synth` itself on every core (worker processes), samples per wall-clock second.

Species, poses, cameras and backgrounds vary as in training (photo backgrounds when
scripts/data/backgrounds.sh has fetched them). Templates load before timing starts.

    python benchmarks/bench_synth.py [--quick] [--json FILE]
"""

from __future__ import annotations

try:
    from . import report
except ImportError:  # run as a script: python benchmarks/bench_x.py
    import report  # type: ignore[no-redef]

import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TARGET = 20.0  # samples per second per core (issue 3)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, {platform.system()}, Python {platform.python_version()}"


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def run(quick: bool = False) -> list[dict]:
    from training import synthesize as syn

    n = 20 if quick else 120
    templates = syn.default_templates_dir()
    synth = syn.Synthesizer(templates, size=160, layers=4)
    for name in synth.species:
        synth._species(name)
    for i in range(5):  # warm-up: first background decodes, Embree device
        synth.sample(syn.sample_seed(99, i))
    synth.timings = dict.fromkeys(synth.timings, 0.0)
    synth.timings["samples"] = 0

    load_before = _load()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        synth.sample(syn.sample_seed(0, i))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stages = {k: v / max(synth.timings["samples"], 1) * 1e3 for k, v in synth.timings.items() if k != "samples"}

    with tempfile.TemporaryDirectory() as tmp:
        w2, c2 = time.perf_counter(), time.process_time()
        for i in range(n // 2):
            s = synth.sample(syn.sample_seed(1, i))
            syn.save_sample(os.path.join(tmp, syn.sample_name(i)), s)
        w2, c2 = time.perf_counter() - w2, time.process_time() - c2
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / (n // 2)

    cores = os.cpu_count() or 1
    count = max(2 * cores, n // 2)
    with tempfile.TemporaryDirectory() as tmp:
        from dualpm_addon import cli

        w3 = time.perf_counter()
        stderr = sys.stderr
        sys.stderr = open(os.devnull, "w")  # the progress bar
        try:
            rc = cli.main(["synth", "--out", os.path.join(tmp, "out"), "--count", str(count), "--seed", "0"])
        finally:
            sys.stderr.close()
            sys.stderr = stderr
        w3 = time.perf_counter() - w3
    if rc != 0:
        raise RuntimeError("dualpm synth failed in the benchmark")

    common = {"machine": machine(), "load_average": load_before, "samples": n, "size": 160, "layers": 4}
    per_cpu = n / cpu
    rows = [
        {"name": "Synthesizer.sample, one process, per CPU second", "value": round(per_cpu, 2), "unit": "samples/s",
         "target": TARGET, "ratio": round(per_cpu / TARGET, 3), **common},
        {"name": "Synthesizer.sample, one process, per wall second", "value": round(n / wall, 2),
         "unit": "samples/s", **common},
    ]
    for stage, ms in stages.items():
        rows.append({"name": f"  stage: {stage}", "value": round(ms, 2), "unit": "ms/sample", **common})
    rows += [
        {"name": "sample + compressed .npz write, one process, per CPU second", "value": round((n // 2) / c2, 2),
         "unit": "samples/s", "target": TARGET, "ratio": round((n // 2) / c2 / TARGET, 3),
         "bytes_per_sample": int(size), **common},
        {"name": f"dualpm synth, {cores} workers, per wall second", "value": round(count / w3, 2),
         "unit": "samples/s", "per_core": round(count / w3 / cores, 2), "target": TARGET * cores,
         "ratio": round(count / w3 / (TARGET * cores), 3), "count": count, **common},
    ]
    return rows


def main(argv=None) -> int:
    return report.main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
