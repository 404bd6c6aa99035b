"""Fixtures shared by the tests that boot the real guest: each skips, saying
what to build, when the build has not made what it needs."""

import pytest

from svmfuzz import vm
from svmfuzz.artifacts import cache, image
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import build_dir


@pytest.fixture(scope="session")
def guest_artifacts() -> vm.Artifacts:
    try:
        return vm.Artifacts.from_build(build_dir())
    except SvmfuzzError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def extend_guest(guest_artifacts):
    """extend_guest({name: static binary}, dir): the build's guest, its
    initramfs made from this checkout's init (which knows svmfuzz.run=extra:)
    and extended with the binaries, written into dir."""
    build = build_dir()
    kernel, module = (cache.linked_artifact(n, build) for n in ("kernel", "module"))
    executor = build / "fuzz" / "executor" / "svmfuzz-executor"
    if kernel is None or module is None or not executor.is_file():
        pytest.skip(f"no kernel, module or executor in {build}: build first")

    def extend(binaries, out_dir) -> vm.Artifacts:
        base = image.build(kernel, module, executor, print) / "initramfs.cpio"
        extended = image.extend(base, binaries, out_dir / "initramfs.cpio")
        return vm.Artifacts(guest_artifacts.qemu, guest_artifacts.kernel, extended)

    return extend
