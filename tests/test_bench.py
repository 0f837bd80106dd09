import json
import os
import subprocess
import sys

from .conftest import ROOT


def test_bench_lists_topics_and_refuses_unknown():
    from dualpm_addon.commands import bench

    assert {"bvh", "server", "synth", "fit", "predictor", "extension"} <= set(bench.topics())
    proc = subprocess.run([sys.executable, "-m", "dualpm_addon.cli", "bench", "--only", "nosuch"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unknown benchmark nosuch" in proc.stderr


def test_bench_runs_one_topic_and_writes_json(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, "-m", "dualpm_addon.cli", "bench", "--only", "synth", "--quick",
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["rows"] and all(r["topic"] == "synth" for r in report["rows"])
    assert "core" in report["machine"] and not os.path.exists(str(out) + ".partial")
