import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from svmfuzz import vm
from svmfuzz.errors import SvmfuzzError

# Stands in for qemu-system-x86_64: serves the executor port the way the
# guest's executor does, and writes a console log.
FAKE_QEMU = textwrap.dedent("""\
    #!{python}
    import os, socket, sys
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_QEMU_MODE", "ok")
    for a in args:
        if a.startswith("file,"):
            console = a.split("path=", 1)[1]
        if a.startswith("socket,"):
            sock = a.split("path=", 1)[1].split(",")[0]
    with open(console, "w") as c:
        c.write("svmdev 0000:00:03.0: svmdev interface 1.0\\n")
        if mode == "warn":
            c.write("WARNING: CPU: 1 PID: 9 at mm/hmm.c:1 hmm_foo+0x1\\n")
    if mode == "die":
        print("qemu: could not load kernel", file=sys.stderr)
        sys.exit(1)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock)
    srv.listen(1)
    conn, _ = srv.accept()
    if mode != "silent":
        conn.sendall(b"READY 1\\n")
    f = conn.makefile("rb")
    for line in f:
        if line == b"PING\\n":
            conn.sendall(b"PONG\\n")
        elif line == b"POWEROFF\\n":
            conn.sendall(b"BYE\\n")
            sys.exit(0)
""")


@pytest.fixture
def artifacts(tmp_path):
    qemu = tmp_path / "qemu" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.write_text(FAKE_QEMU.format(python=sys.executable))
    qemu.chmod(qemu.stat().st_mode | stat.S_IXUSR)
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    return vm.Artifacts(qemu, kernel, tmp_path / "initramfs.cpio")


def config(artifacts, tmp_path, **kw):
    return vm.VmConfig(artifacts, tmp_path / "work", **kw)


def test_argv_has_each_device_and_the_executor_port(artifacts, tmp_path):
    v = vm.Vm(config(artifacts, tmp_path, devices=3, accel="tcg"))
    argv = v.argv()
    assert argv.count("-device") == 5  # virtio-serial, its port, three svmdev
    assert [a for a in argv if a.startswith("svmdev")] == ["svmdev,id=svm0", "svmdev,id=svm1",
                                                          "svmdev,id=svm2"]
    assert "-cpu" not in argv and argv[argv.index("-accel") + 1] == "tcg"
    assert "svmfuzz.run=executor" in argv[argv.index("-append") + 1]
    kvm = vm.Vm(config(artifacts, tmp_path, accel="kvm")).argv()
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_boot_ping_poweroff(artifacts, tmp_path):
    with vm.Vm(config(artifacts, tmp_path)) as v:
        assert v.wait_ready(20) > 0
        assert v.ping() < 5
        v.poweroff(20)
        assert v.proc.returncode == 0
        assert "svmdev interface 1.0" in v.console()
    assert not v._sockdir.exists()


def test_qemu_that_dies_is_reported_with_what_it_said(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    with vm.Vm(config(artifacts, tmp_path)) as v:
        with pytest.raises(SvmfuzzError, match="could not load kernel"):
            v.wait_ready(20)


def test_silent_guest_times_out_with_console_tail(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "silent")
    with vm.Vm(config(artifacts, tmp_path)) as v:
        with pytest.raises(SvmfuzzError, match="no executor after 1 s"):
            v.wait_ready(1)
    assert not v.alive()


def test_kernel_trouble_lines():
    console = ("ok line\n[  1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f\n"
               "BUG: KASAN: use-after-free in foo\nINFO: task a:1 blocked for more than 30 s\n")
    assert len(vm.kernel_trouble(console)) == 3
    assert vm.kernel_trouble("svmdev interface 1.0\n") == []


def test_auto_accel_without_kvm_is_tcg(artifacts, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a: False)
    logs = []
    assert vm.choose_accel("auto", artifacts, tmp_path, logs.append) == "tcg"
    assert "no usable /dev/kvm" in logs[0]
    assert vm.choose_accel("kvm", artifacts, tmp_path, logs.append) == "kvm"


def test_kvm_probe_result_is_remembered(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("SVMFUZZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda *a: True)
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    logs = []
    assert vm.choose_accel("auto", artifacts, tmp_path, logs.append) == "tcg"
    assert any("KVM probe failed" in m for m in logs)
    monkeypatch.setenv("FAKE_QEMU_MODE", "ok")  # not probed again
    assert vm.choose_accel("auto", artifacts, tmp_path, logs.append) == "tcg"
    assert "earlier KVM probe" in logs[-1]
