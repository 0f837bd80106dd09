"""The environments are pinned, and the wheels the extension ships are the pinned versions."""

import os
import re

from tests.conftest import ROOT

LOCKS = ("requirements.txt", "requirements-blender42.txt")


def pins(path: str) -> dict[str, str]:
    out = {}
    for line in open(os.path.join(ROOT, path), encoding="utf-8"):
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([A-Za-z0-9_.+\-!]+)", line)
            assert m, f"{path}: {line!r} is not pinned to one exact version"
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_every_lock_line_is_an_exact_pin():
    for path in LOCKS:
        assert len(pins(path)) > 5


def test_each_top_level_requirement_is_in_its_lock():
    for path in LOCKS:
        top = path.replace(".txt", ".in")
        locked = pins(path)
        for line in open(os.path.join(ROOT, top), encoding="utf-8"):
            line = line.split("#")[0].strip()
            if line:
                name = re.match(r"[A-Za-z0-9_.\-]+", line).group(0).lower().replace("_", "-")
                assert name in locked, f"{top} names {name} but {path} does not pin it"


def test_shipped_wheels_match_the_pins():
    text = open(os.path.join(ROOT, "scripts", "data", "wheels.sh"), encoding="utf-8").read()
    shipped = dict(re.findall(r"\|([a-z]+)==([0-9.]+)\"", text))
    assert set(shipped) == {"onnxruntime", "scipy", "pillow", "av"}
    manifest = open(os.path.join(ROOT, "blender_manifest.toml"), encoding="utf-8").read()
    for path in LOCKS:
        locked = pins(path)
        for name, version in shipped.items():
            assert locked[name] == version, f"{path} pins {name}=={locked[name]}, the extension ships {version}"
            assert f"{name}-{version}-" in manifest
