"""A C reproducer (svmfuzz prog2c) runs in the real guest without the
executor and brings back the kernel report the program gives under the
executor: the driver's unbalanced-notifier report, planted by the
break_imbalance knob that both set through SVMDEV_IOC_KNOBS.

The reproducer reaches the guest as a static binary in an archive appended
to the initramfs (image.extend), run by init's svmfuzz.run=extra:NAME.
"""

import re
import shutil
import subprocess

import pytest

from svmfuzz import native, protocol, repro, runner, vm
from svmfuzz.oracles import console
from svmfuzz.paths import build_dir

pytestmark = pytest.mark.vm

# A mirrored range unmapped: one notifier start and end, which the knob
# makes two starts; the balance check at the end of the program reports it.
PROGRAM = """
    mmap buf=0 pages=4 kind=anon prot=rw
    write buf=0 off=0 pages=4 seed=1
    mirror buf=0 off=0 pages=4 write=no
    munmap buf=0 off=0 pages=4
"""
KNOBS = protocol.Knobs(break_imbalance=1)
TITLE = "unbalanced mmu_notifier start/end in check"
GUEST_SECONDS = 150


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("repro") / "unmap.svmp"
    path.write_text("\n".join(line.strip() for line in PROGRAM.strip().splitlines()) + "\n")
    return path


@pytest.fixture(scope="module")
def reproducer(program):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the reproducer")
    source = program.with_suffix(".c")
    source.write_text(repro.generate(program, knobs=KNOBS))
    binary = program.with_name("svmfuzz-repro")
    subprocess.run(["gcc", "-static", "-pthread", "-O1", "-Wall", "-Werror", "-o", str(binary),
                    str(source)], check=True)
    return binary


@pytest.fixture(scope="module")
def artifacts(extend_guest, reproducer):
    return extend_guest({"svmfuzz-repro": reproducer}, reproducer.parent)


def test_the_reproducer_gives_the_title_the_executor_gives(artifacts, program):
    workdir = build_dir() / "vm" / "repro_vm_test"
    (data,) = runner.encode_programs([program])
    cfg = runner.RunnerConfig(vm.config(artifacts, workdir, accel="tcg"), op_timeout_ms=10000)
    with runner.Runner(cfg, print) as r:
        o = r.run(data, KNOBS)
    assert TITLE in [f.title for f in o.findings], runner.describe(o)

    cfg = vm.config(artifacts, workdir, name="repro", accel="tcg", run="extra:svmfuzz-repro,-v")
    with native.Vm(cfg) as guest:
        exited = guest.wait_exit(GUEST_SECONDS)
        text = guest.console_log.read_text(errors="replace")
    assert exited is not None, f"the guest still ran after {GUEST_SECONDS} s: {guest.console_log}"
    # It ran on its own: no executor came up, and the reproducer ran to its end.
    assert "svmfuzz-executor: ready" not in text
    assert "svmfuzz-init: svmfuzz-repro exited with status 0" in text, guest.console_log
    counts = re.search(r"svmfuzz-repro: file 0: notifier starts (\d+) ends (\d+): UNBALANCED", text)
    assert counts and int(counts[1]) == int(counts[2]) + 1, guest.console_log
    assert TITLE in [f.title for f in console.parse(text)], guest.console_log
