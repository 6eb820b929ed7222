"""Shared pytest fixtures: where the test data lives, and a scratch dir per test."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixtures_path() -> pathlib.Path:
    """The shared fixtures folder: $TF_MLPERF_FIXTURES, else ../shared/fixtures beside the checkout."""
    return pathlib.Path(os.environ.get("TF_MLPERF_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    path = fixtures_path()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"fixtures folder {path} is missing; CI must have ../shared/fixtures")
        pytest.skip(f"fixtures folder {path} is missing (set TF_MLPERF_FIXTURES)")
    return path
