"""Fixtures shared by the tests that boot the real guest: each skips, saying
what to build, when the build has not made what it needs."""

import pytest

from svmfuzz import vm
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import build_dir


@pytest.fixture(scope="session")
def svmprog():
    path = build_dir() / "fuzz" / "program" / "svmprog"
    if not path.is_file():
        pytest.skip(f"no {path}: build it (cmake --build <build> --target svmprog)")
    return path


@pytest.fixture(scope="session")
def guest_artifacts() -> vm.Artifacts:
    try:
        return vm.Artifacts.from_build(build_dir())
    except SvmfuzzError as e:
        pytest.skip(str(e))
