import os
from pathlib import Path

import pytest

from svmfuzz import native, vm
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import build_dir

# Stands in for qemu-system-x86_64 (fuzz/runner/fake_qemu.cc): serves the
# executor's port the way the guest's executor does, each device's control
# channel, and writes a console log. FAKE_QEMU_MODE picks how the "guest"
# behaves, a program's first byte what it does with that program (see
# runner_test.py).
FAKE_QEMU_TARGET = "svmfuzz-fake-qemu"


def make_artifacts(tmp_path: Path) -> vm.Artifacts:
    qemu = build_dir() / "fuzz" / "runner" / FAKE_QEMU_TARGET
    if not qemu.is_file():
        pytest.fail(f"no {qemu}: cmake --build {build_dir()} --target {FAKE_QEMU_TARGET}")
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    return vm.Artifacts(qemu, kernel, tmp_path / "initramfs.cpio")


@pytest.fixture
def artifacts(tmp_path):
    return make_artifacts(tmp_path)


def config(artifacts, tmp_path, **kw):
    return vm.config(artifacts, tmp_path / "work", **kw)


def test_argv_has_each_device_and_the_executor_port(artifacts, tmp_path):
    v = native.Vm(config(artifacts, tmp_path, devices=3, accel="tcg"))
    argv = v.argv()
    assert argv.count("-device") == 5  # virtio-serial, its port, three svmdev
    assert [a for a in argv if a.startswith("svmdev")] == [
        "svmdev,id=svm0,chardev=ctl0", "svmdev,id=svm1,chardev=ctl1", "svmdev,id=svm2,chardev=ctl2"]
    # Each device's control channel, a socket QEMU serves without waiting for the host.
    assert [a for a in argv if a.startswith("socket,id=ctl")] == [
        f"socket,id=ctl{i},path={v.socket_dir / f'ctl{i}.sock'},server=on,wait=off"
        for i in range(3)]
    assert "-cpu" not in argv and argv[argv.index("-accel") + 1] == "tcg"
    assert "svmfuzz.run=executor" in argv[argv.index("-append") + 1]
    assert argv[argv.index("-kernel") + 1] == str(artifacts.kernel / "bzImage")
    kvm = native.Vm(config(artifacts, tmp_path, accel="kvm")).argv()
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_boot_ping_poweroff(artifacts, tmp_path):
    with native.Vm(config(artifacts, tmp_path)) as v:
        assert v.wait_ready(20) > 0
        assert v.ready.kernel == "fake" and v.ready.features == native.FEATURES["kcov"]
        assert v.ping() < 5
        v.poweroff(20)
        assert v.wait_exit(0) == 0
        assert "svmdev interface 1.0" in v.console_log.read_text()
        assert v.console_log == tmp_path / "work" / "vm0.console.log"
    assert not v.socket_dir.exists()


def test_qemu_that_dies_is_reported_with_what_it_said(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "die")
    with native.Vm(config(artifacts, tmp_path)) as v:
        with pytest.raises(SvmfuzzError, match="could not load kernel"):
            v.wait_ready(20)


def test_silent_guest_times_out_with_console_tail(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "silent")
    with native.Vm(config(artifacts, tmp_path)) as v:
        with pytest.raises(SvmfuzzError, match="no executor after 1 s"):
            v.wait_ready(1)
    assert not v.alive()


def test_executor_of_another_protocol_version_is_refused(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "old")
    with native.Vm(config(artifacts, tmp_path)) as v:
        with pytest.raises(SvmfuzzError, match="protocol 1.*rebuild the initramfs"):
            v.wait_ready(20)


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


def test_qemu_aborting_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "abort")
    with native.Vm(vm.config(make_artifacts(tmp_path), tmp_path / "work")) as v:
        v.wait_ready(20)
        with pytest.raises(SvmfuzzError, match="Assertion failed"):
            v.ping()


def test_qmp_command_on_a_monitor(tmp_path):
    """vm.qmp speaks QMP: greeting, capabilities, the command; errors raise."""
    import socket
    import threading

    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    asked = []

    def monitor():
        conn, _ = server.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {}}\n')
        f.flush()
        for reply in (b'{"return": {}}\n', b'{"event": "X"}\n{"return": [1]}\n'):
            asked.append(f.readline())
            f.write(reply)
            f.flush()
        conn.close()

    t = threading.Thread(target=monitor)
    t.start()
    assert vm.qmp(path, "send-key", keys=["a"]) == [1]
    t.join()
    assert b'"send-key"' in asked[1] and b'"keys": ["a"]' in asked[1]


def test_vram_size_is_checked_before_qemu_sees_it():
    assert vm.vram_size("") == ""
    assert vm.vram_size("16m") == "16M"
    assert vm.vram_size("8192") == "8192"
    for bad in ("0", "100", "lots", "1.5G", "-4K"):
        with pytest.raises(SvmfuzzError, match="--vram"):
            vm.vram_size(bad)
