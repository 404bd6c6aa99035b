"""svmdev in the real QEMU, without a guest: DMA and MSI-X aimed at itself, and work that
continues after the register write that started it.

Under the qtest accelerator the test programs the device as a driver would, then points an
MSI-X entry at the CONTROL register (its message data is CTRL_RESET) and copies to and from
BAR0 and the MSI-X table. Without protection the message or the copy would reset the device
in the middle of writing a completion; with it, the message is not sent, the copies fail with
DMA_ERROR, and the device goes on. A copy of more than one slice of work completes from the
device's bottom half, after the doorbell write has returned.
"""
from __future__ import annotations

import struct
import time

import pytest

from svmfuzz.devctl_test import BAR0, CMDQ, CPLQ, DEV, ENTRIES, HW, Device, Vm, qemu_binary

BAR2 = 0xC001_0000
PCI_CAP_ID_MSIX = 0x11


class Config:
    """PCI config space of the device through the 0xCF8/0xCFC ports."""

    def __init__(self, qt):
        self.qt = qt

    def _select(self, off: int) -> None:
        self.qt.outl(0xCF8, 0x8000_0000 | DEV << 11 | off & ~3)

    def read32(self, off: int) -> int:
        self._select(off)
        return self.qt.inl(0xCFC)

    def write32(self, off: int, v: int) -> None:
        self._select(off)
        self.qt.outl(0xCFC, v)

    def capability(self, cap_id: int) -> int:
        off = self.read32(0x34) & 0xFC
        while off:
            header = self.read32(off)
            if header & 0xFF == cap_id:
                return off
            off = header >> 8 & 0xFC
        raise AssertionError(f"no capability {cap_id:#x}")


@pytest.fixture
def vm(tmp_path):
    if not qemu_binary().is_file():
        pytest.skip(f"the QEMU artifact is not built ({qemu_binary()} is missing): "
                    "cmake --build build --target qemu")
    v = Vm(tmp_path)
    yield v
    v.close()


def program_device(vm) -> Device:
    vm.qmp.hmp("log guest_errors")  # to qemu.log: says which layer refused
    dev, qt = Device(vm.qt), vm.qt
    dev.setup_pci()
    cfg = Config(qt)
    cfg.write32(0x18, BAR2)  # the MSI-X table and PBA
    msix = cfg.capability(PCI_CAP_ID_MSIX)
    cfg.write32(msix, cfg.read32(msix) | 1 << 31)  # message control: MSI-X enable
    dev.enable()
    qt.writel(dev.reg("IRQ_MASK"), 0)
    return dev


def alive(dev: Device) -> None:
    qt = dev.qt
    assert qt.readl(dev.reg("ID")) == HW["SVMDEV_ID_MAGIC"]
    assert qt.readl(dev.reg("STATUS")) & HW["SVMDEV_STS_ENABLED"]
    assert dev.run("NOP") == 0


@pytest.mark.vm
def test_msix_entry_aimed_at_bar0_is_not_sent(vm):
    dev, qt = program_device(vm), vm.qt
    control = BAR0 + HW["SVMDEV_REG_CONTROL"]
    entry = struct.pack("<IIII", control & 0xFFFF_FFFF, control >> 32, HW["SVMDEV_CTRL_RESET"], 0)
    qt.write(BAR2 + 16 * HW["SVMDEV_VEC_CMD"], entry)
    seq = dev.submit("NOP", flags=HW["SVMDEV_CMD_F_IRQ"])
    assert dev.completions()[seq] == (0, 0)
    assert qt.readl(dev.reg("IRQ_STATUS")) & HW["SVMDEV_IRQ_CMD"]
    alive(dev)
    assert dev.run("NOP") == 0
    # No reset happened: the commands counter still counts all three.
    assert qt.readq(BAR0 + HW["SVMDEV_REG_COUNTERS"] + 8 * HW["SVMDEV_CNT_CMDS"]) == 3
    # The message was never sent, rather than sent and refused by the registers.
    log = (vm.workdir / "qemu.log").read_text()
    assert "MSI-X vector 0 aims at its own BARs" in log
    assert "register access from the device's own DMA" not in log


@pytest.mark.vm
def test_copies_to_and_from_its_own_bars_fail(vm):
    dev, qt = program_device(vm), vm.qt
    control = BAR0 + HW["SVMDEV_REG_CONTROL"]
    reset = struct.pack("<I", HW["SVMDEV_CTRL_RESET"])
    qt.write(CPLQ + 0x800, reset)  # system memory past the completions in use
    to_vram = HW["SVMDEV_COPY_F_DST_VRAM"]
    from_vram = HW["SVMDEV_COPY_F_SRC_VRAM"]
    assert dev.run("COPY", 0, [CPLQ + 0x800, 0, 4], to_vram) == 4
    cases = [
        ([0, control, 4], from_vram),            # VRAM to CONTROL
        ([CPLQ + 0x800, control, 4], 0),         # system memory to CONTROL
        ([0, BAR2, 16], from_vram),              # VRAM over MSI-X entry 0
        ([BAR0, 0x1000, 0x100], to_vram),        # the registers read as data
        ([control - 0x1000, 0x1000, 0x2000], to_vram),  # a range that only ends inside
    ]
    for args, flags in cases:
        seq = dev.submit("COPY", 0, args, flags)
        status, _ = dev.completions()[seq]
        assert status == HW["SVMDEV_STATUS_DMA_ERROR"], (args, flags)
        alive(dev)
    assert qt.readl(dev.reg("ERROR_CODE")) == HW["SVMDEV_STATUS_DMA_ERROR"]
    # The device refused them itself, not only QEMU's guard against re-entrant I/O (which
    # covers a register write in progress, not the work continued from a bottom half).
    log = (vm.workdir / "qemu.log").read_text()
    assert "svmdev: DMA write to its own BARs refused" in log
    assert "svmdev: DMA read of its own BARs refused" in log
    assert "Blocked re-entrant IO" not in log


def queue(dev: Device, op: str, args, flags: int = 0) -> int:
    """Writes one command without ringing the doorbell; returns its seq."""
    dev.seq += 1
    a = list(args) + [0] * (6 - len(args))
    dev.qt.write(CMDQ + 64 * dev.cmd_tail,
                 struct.pack("<BBHIQ6Q", HW[f"SVMDEV_OP_{op}"], flags, 0, 0, dev.seq, *a))
    dev.cmd_tail = (dev.cmd_tail + 1) % ENTRIES
    return dev.seq


@pytest.mark.vm
def test_copy_larger_than_a_slice_continues_after_the_doorbell(vm):
    dev, qt = program_device(vm), vm.qt
    src, dst, size = 0x100_0000, 0x200_0000, 9 << 20
    marks = [0, 4 << 20, size - 8]
    for off in marks:
        qt.writeq(src + off, 0x5EED_0000 + off)
    big = queue(dev, "COPY", [src, dst, size])
    # Behind it, from the bottom half: a copy aimed at the registers.
    mirror = queue(dev, "COPY", [0, BAR0 + HW["SVMDEV_REG_CONTROL"], 4],
                   HW["SVMDEV_COPY_F_SRC_VRAM"])
    # The doorbell write does a third of it; the rest completes only if the bottom half runs.
    qt.writel(dev.reg("CMDQ_TAIL"), dev.cmd_tail)
    deadline = time.monotonic() + 30
    done = {}
    while mirror not in done and time.monotonic() < deadline:
        done.update(dev.completions())
    assert done.get(big) == (0, size)
    assert done.get(mirror) == (HW["SVMDEV_STATUS_DMA_ERROR"], 0)
    for off in marks:
        assert qt.readq(dst + off) == 0x5EED_0000 + off
    alive(dev)
