"""The fuzz kernel profile in the real guest: KCOV only in mm/ and the
driver, and no comparison operands, with KASAN and lockdep kept. The same
driver program gives fewer PCs than on the debug kernel, and nearly all of
them lie in mm/ or the driver.

The first run builds that kernel (about 12 minutes on 2 cores); the cache
keeps it for later ones.
"""

import subprocess

import pytest

from svmfuzz import bench, runner, vm
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

# Ten ops through the driver: mirror, device accesses, migration both ways.
PROGRAM = bench.PROGRAMS["svm-10"]


def _cover(artifacts: vm.Artifacts, program: bytes, name: str) -> tuple[set[int], str]:
    cfg = runner.RunnerConfig(vm.config(artifacts, build_dir() / "vm" / f"profile_vm_{name}",
                                        accel="tcg"))
    with runner.Runner(cfg, print) as r:
        o = r.run(program)
        assert o.findings == [] and o.result is not None, runner.describe(o)
        assert o.result.status == 0, runner.describe(o)
        return set(o.result.cover) | set(o.result.remote_cover), o.life.console_log.read_text()


def _outer_files(vmlinux, pcs: list[int]) -> list[str]:
    """The file of the function each PC's code was inlined into."""
    out = subprocess.run(["addr2line", "-a", "-i", "-e", str(vmlinux),
                          *(hex(pc) for pc in pcs)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    files, current = [], None
    for line in out:
        if line.startswith("0x"):
            if current is not None:
                files.append(current)
            current = ""
        else:
            current = line
    files.append(current)
    return files


def test_the_fuzz_kernel_covers_mm_and_the_driver_only(guest_artifacts):
    program = runner.encode_texts({"p": PROGRAM})["p"]
    fuzz = vm.Artifacts.for_kernel(build_dir(), "release", None, "fuzz", print)
    config = (fuzz.kernel / ".config").read_text()
    assert "# CONFIG_KCOV_INSTRUMENT_ALL is not set" in config
    assert "# CONFIG_KCOV_ENABLE_COMPARISONS is not set" in config
    for oracle in ("CONFIG_KASAN=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_KCOV=y"):
        assert oracle in config, oracle

    debug_pcs, _ = _cover(guest_artifacts, program, "debug")
    fuzz_pcs, console = _cover(fuzz, program, "fuzz")
    driver = {pc for pc in fuzz_pcs if pc >= 0xffffffffa0000000}
    assert driver, "the driver is not instrumented on the fuzz kernel"

    def outside_mm(kernel_dir, pcs: set[int]) -> float:
        """The share of a sample of the kernel's PCs that lie in functions outside mm/."""
        kernel = sorted(pc for pc in pcs if pc < 0xffffffffa0000000)
        files = _outer_files(kernel_dir / "vmlinux", kernel[:: max(1, len(kernel) // 300)])
        return sum("/mm/" not in f for f in files) / len(files)

    debug_out = outside_mm(guest_artifacts.kernel, debug_pcs)
    fuzz_out = outside_mm(fuzz.kernel, fuzz_pcs)
    print(f"profile_vm: {len(debug_pcs)} PCs on the debug kernel ({debug_out:.0%} outside mm/), "
          f"{len(fuzz_pcs)} on the fuzz kernel ({fuzz_out:.0%} outside mm/, {len(driver)} in "
          f"the driver)")
    assert len(fuzz_pcs) < len(debug_pcs)
    # What remains outside are header functions compiled into mm/ (whose
    # outermost frame is the header) and a few uaccess helpers.
    assert debug_out > 0.3 and fuzz_out < debug_out / 3
    assert "Linux version" in console
