"""The control channel's Python view against the spec header, the C++ client as Python gets
it, and a snapshot round trip of svmdev in the real QEMU.

The round-trip test has no guest: QEMU runs with the qtest accelerator, which lets the test
program PCI config space, device registers and guest memory directly, like a driver would.
It builds a non-trivial device state (contexts, TLB entries, VRAM contents, a stalled access
with its fault record, counters, host-channel settings), saves it with savevm, changes all of
it, loads the snapshot and checks that registers, counters, TLB and VRAM are exactly back and
that the stalled access still completes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from svmfuzz import devctl, native, paths

HEADER = paths.REPO_ROOT / "include" / "svmdev" / "svmdev_hw.h"
FIRMWARE_DIRS = ["/usr/share/qemu", "/usr/share/seabios"]


def hw() -> dict[str, int]:
    """Integer #defines of the spec header (plain values and shifts)."""
    out: dict[str, int] = {}
    for name, expr in re.findall(r"^#define\s+(SVMDEV_\w+)\s+([^/\n]+)", HEADER.read_text(), re.M):
        expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)(?:ull|ul|u)\b", r"\1", expr.strip())
        expr = re.sub(r"\b(SVMDEV_\w+)\b", lambda m: str(out.get(m.group(1), m.group(1))), expr)
        if re.fullmatch(r"[0-9a-fA-Fx()<>| +\-*]+", expr):
            out[name] = eval(expr)  # noqa: S307 - digits and operators only, checked above
    return out


def struct_sizes() -> dict[str, int]:
    text = HEADER.read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"SVMDEV_SIZE_CHECK\(struct (\w+), (\d+)\)", text)}


HW = hw()


# ---- the client alone ----

def test_client_constants_match_the_header():
    for m in devctl.Msg:
        assert HW[f"SVMDEV_CTL_{m.name}"] == m.value, m
    assert HW["SVMDEV_CTL_REPLY"] == devctl.REPLY
    assert HW["SVMDEV_CTL_MAGIC"] == devctl.MAGIC
    assert HW["SVMDEV_CTL_MAX_PAYLOAD"] == devctl.MAX_PAYLOAD
    assert HW["SVMDEV_NUM_COUNTERS"] == devctl.NUM_COUNTERS
    for s in devctl.Status:
        assert HW[f"SVMDEV_STATUS_{s.name}"] == s.value, s
    for k in devctl.Kind:
        assert HW[f"SVMDEV_ACC_{k.name}"] == k.value, k
    for a in devctl.Aop:
        assert HW[f"SVMDEV_AOP_{a.name}"] == a.value, a
    for i in devctl.InvalMode:
        assert HW[f"SVMDEV_INVAL_{i.name}"] == i.value, i
    for e in devctl.Evt:
        assert HW[f"SVMDEV_EVT_{e.name}"] == e.value, e
    sizes = struct_sizes()
    for name, st in [("svmdev_ctl_hdr", devctl.HDR), ("svmdev_ctl_result", devctl.RESULT),
                     ("svmdev_ctl_tlb_entry", devctl.TLB_ENTRY),
                     ("svmdev_ctl_event", devctl.EVENT)]:
        assert sizes[name] == st.size, name


def frame(msg_type: int, tag: int, payload: bytes = b"") -> bytes:
    """A message as the device sends it."""
    assert len(payload) <= devctl.MAX_PAYLOAD
    return devctl.HDR.pack(devctl.MAGIC, msg_type, len(payload), tag) + payload


def fake_device(sock: socket.socket, script) -> None:
    """Answers each request with the frames script(type, tag, payload) returns."""
    def run():
        buf = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return
            buf += data
            while len(buf) >= devctl.HDR.size:
                _, t, n, tag = devctl.HDR.unpack_from(buf)
                if len(buf) < devctl.HDR.size + n:
                    break
                payload, buf = buf[devctl.HDR.size:devctl.HDR.size + n], buf[devctl.HDR.size + n:]
                for chunk in script(t, tag, payload):
                    sock.sendall(chunk)
    threading.Thread(target=run, daemon=True).start()


def test_client_queues_events_between_replies_and_reports_errors():
    event = devctl.EVENT.pack(7, 0x1000, 0, devctl.Evt.FAULT, 3, 1, 0, 1, 0)
    entry = devctl.TLB_ENTRY.pack(0x4000, 0x2000, 0x2013, 1, 0, 1, 0)

    def script(t, tag, payload):
        if t == devctl.Msg.TLB:
            # An event first, and the reply split in two writes.
            reply = frame(t | devctl.REPLY, tag, struct.pack("<I", 1) + entry)
            return [frame(devctl.Msg.EVENT, 0, event), reply[:5], reply[5:]]
        return [frame(devctl.Msg.ERROR, tag,
                             devctl.RESULT.pack(0, devctl.Status.BAD_OPCODE, 0))]

    host, dev = socket.socketpair()
    fake_device(dev, script)
    ctl = native.DevCtl(host.detach(), timeout=5)
    assert ctl.tlb() == [devctl.TlbEntry(0x4000, 0x2000, 0x2013, 1, False, True)]
    assert ctl.events == [devctl.parse_event(event)]
    ev = ctl.next_event(timeout=1)
    assert (ev.stamp, ev.va, ev.kind, ev.code, ev.reason) == (7, 0x1000, devctl.Evt.FAULT, 3, 1)
    with pytest.raises(devctl.DevCtlError, match="BAD_OPCODE"):
        ctl.ping()
    ctl.close()
    dev.close()


# ---- QEMU without a guest: qtest and QMP ----

class Qtest:
    """QEMU's qtest line protocol: port I/O, MMIO and guest memory."""

    def __init__(self, sock: socket.socket):
        self.f = sock.makefile("rwb", buffering=0)

    def cmd(self, line: str) -> str:
        self.f.write(line.encode() + b"\n")
        while True:
            reply = self.f.readline().decode()
            if not reply:
                raise RuntimeError(f"qtest: QEMU went away after {line!r}")
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise RuntimeError(f"qtest: {line!r} -> {reply.strip()}")
            return reply[2:].strip()

    def outl(self, port: int, v: int) -> None:
        self.cmd(f"outl {port:#x} {v:#x}")

    def inl(self, port: int) -> int:
        return int(self.cmd(f"inl {port:#x}"), 16)

    def writel(self, addr: int, v: int) -> None:
        self.cmd(f"writel {addr:#x} {v:#x}")

    def readl(self, addr: int) -> int:
        return int(self.cmd(f"readl {addr:#x}"), 16)

    def writeq(self, addr: int, v: int) -> None:
        self.cmd(f"writeq {addr:#x} {v:#x}")

    def readq(self, addr: int) -> int:
        return int(self.cmd(f"readq {addr:#x}"), 16)

    def write(self, addr: int, data: bytes) -> None:
        self.cmd(f"write {addr:#x} {len(data):#x} 0x{data.hex()}")

    def read(self, addr: int, size: int) -> bytes:
        return bytes.fromhex(self.cmd(f"read {addr:#x} {size:#x}")[2:])


class Qmp:
    def __init__(self, sock: socket.socket):
        self.f = sock.makefile("rwb", buffering=0)
        json.loads(self.f.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **args):
        self.f.write(json.dumps({"execute": command, "arguments": args}).encode() + b"\n")
        while True:
            msg = json.loads(self.f.readline())
            if "event" in msg:
                continue
            if "error" in msg:
                raise RuntimeError(f"QMP {command}: {msg['error']}")
            return msg["return"]

    def hmp(self, line: str) -> None:
        out = self.execute("human-monitor-command", **{"command-line": line})
        # HMP reports failures only as text.
        if out.strip():
            raise RuntimeError(f"HMP {line!r}: {out.strip()}")


# Guest-physical layout of the test.
DEV = 4  # PCI slot on bus 0
BAR0 = 0xC000_0000
CMDQ, CPLQ, FLTQ, ENTRIES = 0x10_0000, 0x10_1000, 0x10_2000, 64
PT = [0x11_0000, 0x11_1000, 0x11_2000, 0x11_3000]  # level 3, 2, 1, 0 tables
SYS_PAGE = 0x20_0000
VA = 0x4000_0000  # VA + n pages: VRAM pages 0..3, then the system page; page 5 unmapped
CTX = 1
VRAM_SIZE = 1 << 20


class Device:
    """svmdev as a driver sees it, through qtest."""

    def __init__(self, qt: Qtest):
        self.qt = qt
        self.seq = 0
        self.cmd_tail = 0
        self.cpl_head = 0

    def reg(self, name: str) -> int:
        return BAR0 + HW[f"SVMDEV_REG_{name}"]

    def setup_pci(self) -> None:
        cfg = 0x8000_0000 | DEV << 11
        self.qt.outl(0xCF8, cfg)
        ids = self.qt.inl(0xCFC)
        assert ids == HW["SVMDEV_PCI_DEVICE_ID"] << 16 | HW["SVMDEV_PCI_VENDOR_ID"], hex(ids)
        for off, v in [(0x10, BAR0), (0x14, 0), (0x04, 0x6)]:  # 64-bit BAR0; memory, bus master
            self.qt.outl(0xCF8, cfg | off)
            self.qt.outl(0xCFC, v)

    def enable(self) -> None:
        for ring, base in [("CMDQ", CMDQ), ("CPLQ", CPLQ), ("FLTQ", FLTQ)]:
            self.qt.writeq(self.reg(f"{ring}_BASE"), base)
            self.qt.writel(self.reg(f"{ring}_ENTRIES"), ENTRIES)
        self.qt.writel(self.reg("CONTROL"), HW["SVMDEV_CTRL_ENABLE"])
        assert self.qt.readl(self.reg("STATUS")) & HW["SVMDEV_STS_ENABLED"]

    def submit(self, op: str, ctx: int = 0, args=(), flags: int = 0) -> int:
        """Queues one command; returns its seq."""
        self.seq += 1
        a = list(args) + [0] * (6 - len(args))
        rec = struct.pack("<BBHIQ6Q", HW[f"SVMDEV_OP_{op}"], flags, ctx, 0, self.seq, *a)
        self.qt.write(CMDQ + 64 * self.cmd_tail, rec)
        self.cmd_tail = (self.cmd_tail + 1) % ENTRIES
        self.qt.writel(self.reg("CMDQ_TAIL"), self.cmd_tail)
        return self.seq

    def completions(self) -> dict[int, tuple[int, int]]:
        """seq -> (status, value) of every completion written since the last call."""
        out = {}
        tail = self.qt.readl(self.reg("CPLQ_TAIL"))
        while self.cpl_head != tail:
            rec = self.qt.read(CPLQ + 32 * self.cpl_head, 32)
            seq, value, status = struct.unpack_from("<QQI", rec)
            out[seq] = (status, value)
            self.cpl_head = (self.cpl_head + 1) % ENTRIES
        self.qt.writel(self.reg("CPLQ_HEAD"), self.cpl_head)
        return out

    def run(self, op: str, ctx: int = 0, args=(), flags: int = 0) -> int:
        seq = self.submit(op, ctx, args, flags)
        status, value = self.completions()[seq]
        assert status == 0, f"{op}: status {status}"
        return value

    def map_pages(self) -> None:
        for level, table, child in zip((3, 2, 1), PT, PT[1:]):
            slot = table + 8 * ((VA >> (12 + 9 * level)) & 511)
            self.qt.writeq(slot, child | HW["SVMDEV_PTE_VALID"])
        rw = HW["SVMDEV_PTE_VALID"] | HW["SVMDEV_PTE_READ"] | HW["SVMDEV_PTE_WRITE"]
        for n in range(4):
            self.set_leaf(n, n * 0x1000 | rw | HW["SVMDEV_PTE_ATOMIC"] | HW["SVMDEV_PTE_VRAM"])
        self.set_leaf(4, SYS_PAGE | rw)

    def set_leaf(self, page: int, pte: int) -> None:
        self.qt.writeq(PT[3] + 8 * (((VA >> 12) + page) & 511), pte)

    def registers(self) -> dict[str, int]:
        names = ["CONTROL", "STATUS", "IRQ_STATUS", "IRQ_MASK", "ERROR_CODE", "CMDQ_HEAD",
                 "CMDQ_TAIL", "CPLQ_HEAD", "CPLQ_TAIL", "FLTQ_HEAD", "FLTQ_TAIL",
                 "CMDQ_ENTRIES", "CPLQ_ENTRIES", "FLTQ_ENTRIES"]
        out = {n: self.qt.readl(self.reg(n)) for n in names}
        for n in ["ERROR_ADDR", "CMDQ_BASE", "CPLQ_BASE", "FLTQ_BASE"]:
            out[n] = self.qt.readq(self.reg(n))
        for i in range(HW["SVMDEV_NUM_COUNTERS"]):
            out[f"COUNTER{i}"] = self.qt.readq(BAR0 + HW["SVMDEV_REG_COUNTERS"] + 8 * i)
        return out


def qemu_binary() -> Path:
    return paths.artifacts_dir() / "qemu-release" / "qemu-system-x86_64"


class Vm:
    """QEMU with one svmdev, qtest for the test's hands, QMP for savevm/loadvm."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        disk = workdir / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        listeners = {}
        for name in ("qtest", "qmp", "ctl"):
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(workdir / f"{name}.sock"))
            s.listen(1)
            s.settimeout(30)
            listeners[name] = s
        qemu = os.path.realpath(qemu_binary())
        argv = [qemu, "-nodefaults", "-display", "none", "-M", "q35", "-m", "128",
                *[a for d in FIRMWARE_DIRS for a in ("-L", d)],
                "-accel", "qtest", "-qtest", f"unix:{workdir / 'qtest.sock'}",
                "-qmp", f"unix:{workdir / 'qmp.sock'}",
                "-chardev", f"socket,id=ctl,path={workdir / 'ctl.sock'}",
                "-drive", f"if=none,id=disk,format=qcow2,file={disk}",
                "-device", f"svmdev,addr={DEV:02x}.0,vram-size={VRAM_SIZE},contexts=4,chardev=ctl"]
        self.log = open(workdir / "qemu.log", "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            conns = {name: s.accept()[0] for name, s in listeners.items()}
        except socket.timeout:
            self.close()
            raise RuntimeError(f"QEMU did not connect: {(workdir / 'qemu.log').read_text()}")
        finally:
            for s in listeners.values():
                s.close()
        self.qt = Qtest(conns["qtest"])
        self.qmp = Qmp(conns["qmp"])
        self.ctl = native.DevCtl(conns["ctl"].detach())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def vm(tmp_path):
    if not qemu_binary().is_file():
        pytest.skip(f"the QEMU artifact is not built ({qemu_binary()} is missing): "
                    "cmake --build build --target qemu")
    v = Vm(tmp_path)
    yield v
    v.close()


def read(ctl, ctx: int, va: int, size: int = 8) -> int:
    r = ctl.access(ctx, va, devctl.Kind.READ, size)
    assert r.status == devctl.Status.OK, f"read of {va:#x}: {devctl.Status(r.status).name}"
    return r.value


def write(ctl, ctx: int, va: int, value: int) -> None:
    r = ctl.access(ctx, va, devctl.Kind.WRITE, 8, value)
    assert r.status == devctl.Status.OK, f"write of {va:#x}: {devctl.Status(r.status).name}"


def snapshot_view(dev: Device, ctl) -> dict:
    """Everything the host can read without changing the device."""
    return {"regs": dev.registers(), "counters": ctl.counters(), "tlb": ctl.tlb(),
            "ping": ctl.ping()}


def vram_words(ctl) -> list[int]:
    return [read(ctl, CTX, VA + page * 0x1000 + off) for page in range(4) for off in (0, 8, 0xFF8)]


@pytest.mark.vm
def test_snapshot_round_trip_restores_the_device_exactly(vm):
    dev, ctl, qt = Device(vm.qt), vm.ctl, vm.qt
    dev.setup_pci()
    dev.enable()
    dev.map_pages()
    qt.write(SYS_PAGE, bytes(range(256)))
    E = devctl.Evt
    ctl.set_events(E.FAULT | E.INVALIDATE | E.ACCESS_DONE)

    # Contexts, VRAM contents from the copy engine, a device-side access and host accesses.
    dev.run("CTX_SETUP", CTX, [PT[0]])
    dev.run("CTX_SETUP", 2, [PT[0]])
    assert dev.run("COPY", 0, [SYS_PAGE, 0x3000, 256], HW["SVMDEV_COPY_F_DST_VRAM"]) == 256
    acc_write = HW["SVMDEV_ACC_WRITE"] | 8 << 8
    dev.run("ACCESS", CTX, [VA + 0x1008, acc_write, 0x0BAD_F00D_0BAD_F00D])
    for page in range(3):
        write(ctl, CTX, VA + page * 0x1000, 0x1111_0000 * (page + 1) + 0x55)
        write(ctl, CTX, VA + page * 0x1000 + 0xFF8, 0xA5A5_0000 + page)
    r = ctl.access(CTX, VA + 0x2000, devctl.Kind.ATOMIC, 8, 5, aop=devctl.Aop.ADD)
    assert r.status == devctl.Status.OK
    assert read(ctl, 2, VA + 0x4000 + 0x10, 4) == 0x13121110  # context 2, system page
    # A host access that stalls: its fault record goes to the fault ring.
    stalled = ctl.access(CTX, VA + 0x5000, devctl.Kind.WRITE, 8, 0x5EED)
    assert stalled.status == devctl.Status.STALLED and stalled.fault_id
    ev = ctl.next_event()
    assert (ev.kind, ev.code, ev.va) == (E.FAULT, stalled.fault_id, VA + 0x5000)
    ctl.inval_mode(devctl.InvalMode.DELAY, 2, 3)
    ctl.fail_dma(1000, 1)

    before_words = vram_words(ctl)
    assert before_words[:3] == [0x1111_0055, 0, 0xA5A5_0000]
    assert before_words[3:6] == [0x2222_0055, 0x0BAD_F00D_0BAD_F00D, 0xA5A5_0001]
    assert before_words[6] == 0x3333_0055 + 5
    assert before_words[9] == int.from_bytes(bytes(range(8)), "little")
    before = snapshot_view(dev, ctl)
    # Context 1: VRAM pages 0..3; context 2: the system page.
    assert len(before["tlb"]) == 5 and before["counters"][HW["SVMDEV_CNT_FAULTS"]] == 1
    fault_ring = qt.read(FLTQ, 32)

    vm.qmp.hmp("savevm round-trip")
    assert snapshot_view(dev, ctl) == before

    # Change everything: VRAM, TLB, counters, registers, channel settings.
    for page in range(4):
        write(ctl, CTX, VA + page * 0x1000, 0xDEAD_BEEF)
    ctl.inval_mode(devctl.InvalMode.NORMAL, 0)
    dev.run("INVALIDATE", CTX, [0, 0], HW["SVMDEV_INV_F_ALL"])
    qt.writel(dev.reg("CONTROL"), HW["SVMDEV_CTRL_RESET"])
    changed = snapshot_view(dev, ctl)
    assert changed["tlb"] == [] and changed["regs"] != before["regs"]
    assert changed["counters"] != before["counters"]

    vm.qmp.hmp("loadvm round-trip")
    assert snapshot_view(dev, ctl) == before
    assert qt.read(FLTQ, 32) == fault_ring
    assert vram_words(ctl) == before_words

    # The stalled access survived: map its page and replay it. Events of the reset are stale.
    ctl.clear_events()
    dev.completions()
    rw = HW["SVMDEV_PTE_VALID"] | HW["SVMDEV_PTE_READ"] | HW["SVMDEV_PTE_WRITE"]
    dev.set_leaf(5, 0x6000 | rw | HW["SVMDEV_PTE_VRAM"])
    assert dev.run("FAULT_REPLAY", CTX, [stalled.fault_id]) == 1
    deadline = time.monotonic() + 10
    while (ev := ctl.next_event(timeout=deadline - time.monotonic())).kind != E.ACCESS_DONE:
        pass
    assert ev.code == devctl.Status.OK
    assert read(ctl, CTX, VA + 0x5000) == 0x5EED


def _incoming(workdir: Path, stream: Path) -> tuple[int | None, str]:
    """A QEMU like the test's taking its state from `stream`: its exit status
    and output, or None for one that took the state and went on."""
    argv = [os.path.realpath(qemu_binary()), "-nodefaults", "-display", "none", "-M", "q35",
            "-m", "128", *[a for d in FIRMWARE_DIRS for a in ("-L", d)], "-accel", "qtest",
            "-chardev", "null,id=ctl",
            "-device", f"svmdev,addr={DEV:02x}.0,vram-size={VRAM_SIZE},contexts=4,chardev=ctl",
            "-incoming", f"exec:cat {stream}"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, cwd=workdir)
    try:
        out, _ = p.communicate(timeout=15)
        return p.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out.decode(errors="replace")


@pytest.mark.vm
def test_a_stream_whose_state_length_is_too_large_is_refused_before_any_allocation(vm):
    dev = Device(vm.qt)
    dev.setup_pci()
    dev.enable()
    stream = vm.workdir / "stream"
    vm.qmp.execute("migrate", uri=f"exec:cat > {stream}")
    deadline = time.monotonic() + 60
    while (status := vm.qmp.execute("query-migrate").get("status")) != "completed":
        assert status not in ("failed", "cancelled") and time.monotonic() < deadline, status
        time.sleep(0.1)
    data = stream.read_bytes()
    # The device's state starts with its magic ("SVM2", little-endian); the
    # stream gives its length (big-endian) just before it.
    at = data.find(struct.pack("<I", 0x53564D32))
    assert at >= 4, "no device state in the stream"
    (length,) = struct.unpack(">I", data[at - 4:at])
    assert 0 < length < len(data) - at + 1

    status, out = _incoming(vm.workdir, stream)
    assert status is None and "svmdev" not in out, out  # the stream as saved loads
    for bad in (0xFFFF_FFF0, 0x8000_0000):
        patched = vm.workdir / f"stream-{bad:x}"
        patched.write_bytes(data[:at - 4] + struct.pack(">I", bad) + data[at:])
        status, out = _incoming(vm.workdir, patched)
        assert status not in (None, 0) and "Input validation failed: svmdev" in out, out
