"""Where svmfuzz finds its sources, keeps its cache and looks for built artifacts."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """Built artifacts live outside the work tree, shared by every checkout."""
    env = os.environ.get("SVMFUZZ_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "svmfuzz"


def build_dir() -> Path:
    """The CMake build directory, which links to the artifacts it uses."""
    return Path(os.environ.get("SVMFUZZ_BUILD", REPO_ROOT / "build"))


def artifacts_dir(build: Path | None = None) -> Path:
    return (build or build_dir()) / "artifacts"
