"""The C++ host runner (fuzz/runner): QEMU, the executor's port, the devices'
control channels and VM lives, built as the svmfuzz_runner module in the CMake
build directory and loaded from there on first use: native.Runner,
native.RunnerConfig, native.Vm, native.VmConfig, native.DevCtl, native.Lost.
It also holds the program codec of fuzz/program: native.encode_program,
native.decode_program, native.format_program and native.c_source.
"""

import importlib.machinery
import importlib.util
from pathlib import Path

from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import build_dir

NAME = "svmfuzz_runner"
TARGET = "svmfuzz_runner_python"  # its CMake target

_build: Path | None = None
_module = None


def use_build(build: Path) -> None:
    """Load the module from `build` rather than the default build directory."""
    global _build
    _build = build


def module():
    global _module
    if _module is None:
        build = _build or build_dir()
        where = build / "fuzz" / "runner"
        found = [where / f"{NAME}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise SvmfuzzError(f"the C++ runner module {NAME} is not built in {where}: "
                               f"cmake --build {build} --target {TARGET}")
        spec = importlib.util.spec_from_file_location(NAME, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _module = mod
    return _module


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(module(), name)
