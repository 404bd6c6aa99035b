import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from svmfuzz import protocol, vm
from svmfuzz.errors import SvmfuzzError

# Stands in for qemu-system-x86_64: serves the executor port the way the
# guest's executor does (protocol.py), each device's control channel (every
# request succeeds; an ACCESS reads 0x1234 and is reported stale), and writes
# a console log. A program's first byte picks what the "guest" does with it
# (see runner_test.py).
FAKE_QEMU = textwrap.dedent("""\
    #!{python}
    import os, socket, struct, sys, threading, time
    sys.path.insert(0, {pyharness!r})
    from svmfuzz import devctl as d, protocol as p
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_QEMU_MODE", "ok")
    ctls = []
    for a in args:
        if a.startswith("file,"):
            console = a.split("path=", 1)[1]
        if a.startswith("socket,id=exec,"):
            sock = a.split("path=", 1)[1].split(",")[0]
        elif a.startswith("socket,"):
            ctls.append(a.split("path=", 1)[1].split(",")[0])

    def control_channel(path):
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        c, _ = srv.accept()
        buf = b""
        while chunk := c.recv(65536):
            buf += chunk
            while len(buf) >= d.HDR.size:
                _, kind, n, tag = d.HDR.unpack_from(buf)
                body, buf = buf[d.HDR.size:d.HDR.size + n], buf[d.HDR.size + n:]
                out = d.RESULT.pack(0, 0, 0)
                if kind == d.Msg.PING:
                    out = struct.pack("<II", 0x10000, 0)
                if kind == d.Msg.ACCESS:
                    va = d.ACCESS.unpack(body)[0]
                    c.sendall(d.frame(d.Msg.EVENT, 0, d.EVENT.pack(
                        1, va, 0x7f000, d.Evt.STALE, 0, 3, 0, 0, 0)))
                    out = d.RESULT.pack(0x1234, 0, 0)
                c.sendall(d.frame(kind | d.REPLY, tag, out))

    def serve_control_channels():
        threads = [threading.Thread(target=control_channel, args=(path,), daemon=True)
                   for path in ctls]
        for t in threads:
            t.start()
        return threads

    con = open(console, "w", buffering=1)
    con.write("svmdev 0000:00:03.0: svmdev interface 1.0\\n")
    if mode == "warn":
        con.write("WARNING: CPU: 1 PID: 9 at mm/hmm.c:1 hmm_foo+0x1\\n")
    if mode == "die":
        print("qemu: could not load kernel", file=sys.stderr)
        sys.exit(1)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock)
    srv.listen(1)
    conn, _ = srv.accept()
    if mode == "exec":  # the real executor, on this machine, serves the port
        if os.fork() == 0:  # and a process of ours the control channels
            for t in serve_control_channels():
                t.join()
            os._exit(0)
        os.set_inheritable(conn.fileno(), True)
        exe = os.environ["FAKE_QEMU_EXECUTOR"]
        os.execv(exe, [exe, "--fd", str(conn.fileno())])
    serve_control_channels()
    if mode == "silent":
        time.sleep(3600)
    if mode == "abort":  # QEMU asserting with a request unread: the host sees a reset
        conn.sendall(p.frame(p.Msg.READY, p.Ready(p.VERSION, p.Feature.KCOV, "fake").encode()))
        time.sleep(1)
        print("qemu-system-x86_64: kvm.c:3183: Assertion failed", file=sys.stderr)
        os.abort()
    version = 1 if mode == "old" else p.VERSION
    conn.sendall(p.frame(p.Msg.READY, p.Ready(version, p.Feature.KCOV, "fake").encode()))
    reader = p.FrameReader()
    while chunk := conn.recv(65536):
        reader.feed(chunk)
        while (f := reader.next()) is not None:
            kind, payload = f
            if kind == p.Msg.PING:
                conn.sendall(p.frame(p.Msg.PONG, payload))
            elif kind == p.Msg.POWEROFF:
                conn.sendall(p.frame(p.Msg.BYE))
                sys.exit(0)
            elif kind == p.Msg.EXEC:
                req = p.ExecRequest.decode(payload)
                what = req.program[:1]
                if what == b"\\xfe":  # the kernel dies
                    con.write("BUG: KASAN: use-after-free in hmm_range_fault+0x1/0x2\\n")
                    con.write("Kernel panic - not syncing: KASAN\\n")
                    sys.exit(0)
                if what == b"\\xfd":  # the guest hangs
                    time.sleep(3600)
                if what == b"\\xfc":  # the executor goes away
                    conn.close()
                    time.sleep(3600)
                if what == b"\\xfb":  # the kernel warns and goes on
                    con.write("WARNING: CPU: 0 PID: 1 at mm/hmm.c:2 hmm_bar+0x2\\n")
                ret = 0
                if what == b"\\xfa":  # a dev_access: the host answers it mid-program
                    ask = p.DeviceRequest(7, p.OP_NAMES.index("dev_access"), 0, 3,
                                          0x100000000008, 0, 0)
                    conn.sendall(p.frame(p.Msg.DEVICE, ask.encode()))
                    while (r := reader.next()) is None:
                        reader.feed(conn.recv(65536))
                    reply = p.DeviceReply.decode(r[1])
                    ret = reply.value if reply.seq == 7 else -1
                ops = [p.OpResult(b, 0, p.OpFlag.STARTED | p.OpFlag.DONE, 0, ret, 1)
                       for b in req.program]
                res = p.ExecResult(req.id, p.Status.OK, ops=ops, cover=[len(req.program)])
                conn.sendall(p.frame(p.Msg.RESULT, res.encode()))
""")
PYHARNESS = str(Path(__file__).resolve().parents[1])


def make_artifacts(tmp_path: Path) -> vm.Artifacts:
    qemu = tmp_path / "qemu" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.write_text(FAKE_QEMU.format(python=sys.executable, pyharness=PYHARNESS))
    qemu.chmod(qemu.stat().st_mode | stat.S_IXUSR)
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    return vm.Artifacts(qemu, kernel, tmp_path / "initramfs.cpio")


@pytest.fixture
def artifacts(tmp_path):
    return make_artifacts(tmp_path)


def config(artifacts, tmp_path, **kw):
    return vm.VmConfig(artifacts, tmp_path / "work", **kw)


def test_argv_has_each_device_and_the_executor_port(artifacts, tmp_path):
    v = vm.Vm(config(artifacts, tmp_path, devices=3, accel="tcg"))
    argv = v.argv()
    assert argv.count("-device") == 5  # virtio-serial, its port, three svmdev
    assert [a for a in argv if a.startswith("svmdev")] == [
        "svmdev,id=svm0,chardev=ctl0", "svmdev,id=svm1,chardev=ctl1", "svmdev,id=svm2,chardev=ctl2"]
    # Each device's control channel, a socket QEMU serves without waiting for the host.
    assert [a for a in argv if a.startswith("socket,id=ctl")] == [
        f"socket,id=ctl{i},path={v.ctl_socks[i]},server=on,wait=off" for i in range(3)]
    assert "-cpu" not in argv and argv[argv.index("-accel") + 1] == "tcg"
    assert "svmfuzz.run=executor" in argv[argv.index("-append") + 1]
    kvm = vm.Vm(config(artifacts, tmp_path, accel="kvm")).argv()
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_boot_ping_poweroff(artifacts, tmp_path):
    with vm.Vm(config(artifacts, tmp_path)) as v:
        assert v.wait_ready(20) > 0
        assert v.ready.kernel == "fake" and v.ready.features == protocol.Feature.KCOV
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


def test_execute_round_trip(artifacts, tmp_path):
    with vm.Vm(config(artifacts, tmp_path)) as v:
        v.wait_ready(20)
        r = v.execute(protocol.ExecRequest(7, b"\x01\x02"), 20)
        assert r.id == 7 and r.status == protocol.Status.OK
        assert [o.code for o in r.ops] == [1, 2] and r.cover == [2]


def test_executor_of_another_protocol_version_is_refused(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_MODE", "old")
    with vm.Vm(config(artifacts, tmp_path)) as v:
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
    with vm.Vm(vm.VmConfig(make_artifacts(tmp_path), tmp_path / "work")) as v:
        v.wait_ready(20)
        with pytest.raises(SvmfuzzError, match="Assertion failed"):
            v.ping()
