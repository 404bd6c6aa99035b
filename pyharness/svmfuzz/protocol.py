"""The protocol between the host and the in-guest executor: the Python side of
fuzz/protocol/protocol.h (layout documented in docs/executor-protocol.md).

Frames are a 12-byte header (magic "SVMF", type, payload length; u32
little-endian each) and the payload.
"""

import enum
import struct
from dataclasses import dataclass, field, fields

from svmfuzz.errors import SvmfuzzError

VERSION = 4
MAGIC = b"SVMF"
HEADER = struct.Struct("<4sII")
MAX_PAYLOAD = 16 << 20


class ProtocolError(SvmfuzzError):
    pass


class Msg(enum.IntEnum):
    READY = 1
    PING = 2
    PONG = 3
    POWEROFF = 4
    BYE = 5
    EXEC = 6
    RESULT = 7
    ERROR = 8
    DEVICE = 9
    DEVICE_REPLY = 10


class Feature(enum.IntFlag):
    KCOV = 1 << 0
    KCOV_REMOTE = 1 << 1
    DRIVER = 1 << 2
    FAIL_NTH = 1 << 3
    FAILSLAB = 1 << 4
    FAIL_PAGE_ALLOC = 1 << 5


EXEC_COVER = 1 << 0

# Names of OpResult.code, the opcodes of fuzz/program/program.h in order.
OP_NAMES = (
    "mmap", "munmap", "mprotect", "madvise", "mremap", "fork", "thread_create", "thread_join",
    "touch", "read", "write", "verify", "mirror", "map_present", "migrate_to_dev", "migrate_to_sys",
    "dev_read", "dev_write", "dev_atomic", "snapshot", "exclusive", "release", "dev_access",
    "fault_storm", "delay_acks", "drop_acks", "fail_dma", "fail_nth", "failslab",
    "fail_page_alloc", "drv_fail_alloc", "drv_fail_copy", "oom_kill", "sleep", "yield",
    "open_dev", "kill_child", "mrelease")


def op_name(code: int) -> str:
    return OP_NAMES[code] if code < len(OP_NAMES) else f"op{code}"


class Drv(enum.IntEnum):
    """The driver's counters (SVMDEV_CTR_* of include/svmdev/svmdev_uapi.h):
    indexes of ExecResult.watchdog_deltas, and of ExecResult.counters after HW_COUNTERS."""
    FAULTS = 0
    FAULT_REPLAYS = 1
    FAULT_CANCELS = 2
    HMM_BUSY = 3
    READ_RETRY = 4
    MIGRATE_RETRY = 5
    EXCL_RETRY = 6
    INVALIDATIONS = 7
    INVAL_NONBLOCK_FAIL = 8
    FENCE_TIMEOUTS = 9
    TO_DEV = 10
    TO_RAM = 11
    CPU_FAULTS = 12
    EVICTED = 13
    LIVELOCK = 14
    COPY_ERRORS = 15
    DEV_ERRORS = 16
    VRAM_FREE = 17
    RING_RESTARTS = 18
    EXCL_THP = 19


HW_COUNTERS = 16
# ExecResult.counters: hw[16], drv[len(Drv)], then these.
MN_STARTS, MN_ENDS, MN_REFUSED, BALANCED = range(HW_COUNTERS + len(Drv), HW_COUNTERS + len(Drv) + 4)


@dataclass
class Knobs:
    """Test-only driver knobs for a program (struct svmdev_knobs, docs/executor-protocol.md):
    the executor sets them on every device file the program opens."""
    fail_vram_alloc: int = 0
    fail_copy: int = 0
    fault_delay_ms: int = 0
    break_skip_invalidate: int = 0
    break_livelock: int = 0
    break_leak_page: int = 0
    break_imbalance: int = 0
    break_fence_wait: int = 0

    def values(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]


class Status(enum.IntEnum):
    OK = 0
    CRASHED = 1         # detail: signal
    HUNG = 2            # detail: index of the op over its bound, or -1 for the program's
    OOM_KILLED = 3
    STUCK = 4           # detail: state letter of the unkillable task, e.g. ord("D")
    EXECUTOR_ERROR = 5  # message says why


class OpFlag(enum.IntFlag):
    STARTED = 1 << 0
    DONE = 1 << 1
    TIMED_OUT = 1 << 2
    UNSUPPORTED = 1 << 3
    FAULT_INJECTED = 1 << 4
    ACCESS_FAULT = 1 << 5
    SKIPPED = 1 << 6
    MISMATCH = 1 << 7
    CHILD_FAILED = 1 << 8


END_OF_PROCESS = 0xFFFFFFFF  # Mismatch.op of the check when a process ends


def frame(msg: Msg, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, int(msg), len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (Msg or int, payload) frames."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self):
        """The next complete frame, or None. Raises ProtocolError on a bad header."""
        if len(self._buf) < HEADER.size:
            return None
        magic, kind, length = HEADER.unpack_from(self._buf)
        if magic != MAGIC or length > MAX_PAYLOAD:
            bad = self._buf[:HEADER.size]
            # Skip to the next magic so one torn frame does not lose the stream.
            at = self._buf.find(MAGIC, 1)
            # Without a magic, the last bytes may still be the start of one.
            self._buf = self._buf[at:] if at > 0 else self._buf[-(len(MAGIC) - 1):]
            raise ProtocolError(f"bad frame header {bad!r}")
        if len(self._buf) < HEADER.size + length:
            return None
        payload = self._buf[HEADER.size:HEADER.size + length]
        self._buf = self._buf[HEADER.size + length:]
        try:
            kind = Msg(kind)
        except ValueError:
            pass
        return kind, payload


@dataclass
class Ready:
    version: int
    features: Feature
    kernel: str

    def encode(self) -> bytes:
        return struct.pack("<II", self.version, int(self.features)) + self.kernel.encode()

    @classmethod
    def decode(cls, payload: bytes) -> "Ready":
        if len(payload) < 8:
            raise ProtocolError("short READY")
        version, features = struct.unpack_from("<II", payload)
        return cls(version, Feature(features), payload[8:].decode(errors="replace"))


@dataclass
class ExecRequest:
    id: int
    program: bytes
    flags: int = EXEC_COVER
    op_timeout_ms: int = 5000
    program_timeout_ms: int = 20000
    cover_cap: int = 65536
    knobs: Knobs | None = None  # None: the driver's defaults

    _HEAD = struct.Struct("<QIIII")

    def encode(self) -> bytes:
        knobs = self.knobs.values() if self.knobs is not None else []
        return (self._HEAD.pack(self.id, self.flags, self.op_timeout_ms, self.program_timeout_ms,
                                self.cover_cap)
                + struct.pack(f"<I{len(knobs)}Q", len(knobs), *knobs) + self.program)

    @classmethod
    def decode(cls, payload: bytes) -> "ExecRequest":
        head = cls._HEAD.size + 4
        if len(payload) < head:
            raise ProtocolError("short EXEC")
        id_, flags, op_ms, prog_ms, cap = cls._HEAD.unpack_from(payload)
        (n,) = struct.unpack_from("<I", payload, cls._HEAD.size)
        if n > len(fields(Knobs)) or len(payload) < head + 8 * n:
            raise ProtocolError(f"EXEC with {n} knobs")
        values = struct.unpack_from(f"<{n}Q", payload, head)
        knobs = Knobs(*values) if n else None
        return cls(id_, payload[head + 8 * n:], flags, op_ms, prog_ms, cap, knobs)


# DeviceReply.status when the host cannot reach the device's control channel;
# otherwise it is the device's (devctl.Status).
DEVICE_UNAVAILABLE = 0xFFFFFFFF


@dataclass
class DeviceRequest:
    """A device action a program asks of the host (docs/executor-protocol.md, "Device actions")."""
    seq: int
    op: int       # the program's opcode, an index of OP_NAMES
    device: int   # the N of /dev/svmdevN
    ctx: int      # the device context of the process's bound file
    va: int
    arg0: int
    arg1: int

    _S = struct.Struct("<IBBHQQQ")

    def encode(self) -> bytes:
        return self._S.pack(self.seq, self.op, self.device, self.ctx, self.va, self.arg0, self.arg1)

    @classmethod
    def decode(cls, payload: bytes) -> "DeviceRequest":
        if len(payload) != cls._S.size:
            raise ProtocolError(f"DEVICE of {len(payload)} bytes")
        return cls(*cls._S.unpack(payload))


@dataclass
class DeviceReply:
    seq: int
    status: int
    value: int = 0

    _S = struct.Struct("<IIQ")

    def encode(self) -> bytes:
        return self._S.pack(self.seq, self.status, self.value)

    @classmethod
    def decode(cls, payload: bytes) -> "DeviceReply":
        if len(payload) != cls._S.size:
            raise ProtocolError(f"DEVICE_REPLY of {len(payload)} bytes")
        return cls(*cls._S.unpack(payload))


@dataclass
class OpResult:
    code: int
    thread: int
    flags: OpFlag
    err: int
    ret: int
    duration_us: int

    _S = struct.Struct("<BBHiqI")


@dataclass
class Mismatch:
    op: int
    buffer: int
    offset: int
    page: int
    expected: int
    actual: int

    _S = struct.Struct("<IHHIBB")


@dataclass
class ExecResult:
    id: int
    status: Status
    detail: int = 0
    duration_us: int = 0
    ops: list[OpResult] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)
    watchdog_deltas: list[int] = field(default_factory=list)
    cover: list[int] = field(default_factory=list)
    remote_cover: list[int] = field(default_factory=list)
    message: str = ""

    _HEAD = struct.Struct("<QIiI")

    def encode(self) -> bytes:
        out = [self._HEAD.pack(self.id, int(self.status), self.detail, self.duration_us),
               struct.pack("<I", len(self.ops))]
        out += [OpResult._S.pack(o.code, o.thread, int(o.flags), o.err, o.ret, o.duration_us)
                for o in self.ops]
        out.append(struct.pack("<I", len(self.mismatches)))
        out += [Mismatch._S.pack(m.op, m.buffer, m.offset, m.page, m.expected, m.actual)
                for m in self.mismatches]
        for pcs in (self.counters, self.watchdog_deltas, self.cover, self.remote_cover):
            out.append(struct.pack(f"<I{len(pcs)}Q", len(pcs), *pcs))
        msg = self.message.encode()
        out.append(struct.pack("<I", len(msg)) + msg)
        return b"".join(out)

    @classmethod
    def decode(cls, payload: bytes) -> "ExecResult":
        try:
            return cls._decode(memoryview(payload))
        except (struct.error, ValueError) as e:
            raise ProtocolError(f"bad RESULT: {e}") from None

    @classmethod
    def _decode(cls, p: memoryview) -> "ExecResult":
        pos = 0

        def take(s: struct.Struct):
            nonlocal pos
            v = s.unpack_from(p, pos)
            pos += s.size
            return v

        def count(size: int) -> int:
            (n,) = take(struct.Struct("<I"))
            if n * size > len(p) - pos:
                raise ProtocolError(f"count {n} past the end")
            return n

        id_, status, detail, duration = take(cls._HEAD)
        r = cls(id_, Status(status), detail, duration)
        for _ in range(count(OpResult._S.size)):
            code, thread, flags, err, ret, us = take(OpResult._S)
            r.ops.append(OpResult(code, thread, OpFlag(flags), err, ret, us))
        for _ in range(count(Mismatch._S.size)):
            r.mismatches.append(Mismatch(*take(Mismatch._S)))
        for name in ("counters", "watchdog_deltas", "cover", "remote_cover"):
            n = count(8)
            setattr(r, name, list(take(struct.Struct(f"<{n}Q"))))
        n = count(1)
        r.message = bytes(p[pos:pos + n]).decode(errors="replace")
        pos += n
        if pos != len(p):
            raise ProtocolError(f"{len(p) - pos} bytes after RESULT")
        return r

    def title(self) -> str:
        """One line saying how the program ended."""
        if self.status == Status.CRASHED:
            return f"crashed with signal {self.detail}"
        if self.status == Status.HUNG:
            return ("hung: the program passed its deadline" if self.detail < 0
                    else f"hung: op {self.detail} passed its deadline")
        if self.status == Status.STUCK:
            return f"stuck in state {chr(self.detail)} after SIGKILL"
        if self.status == Status.EXECUTOR_ERROR:
            return f"executor error: {self.message}"
        return self.status.name.lower().replace("_", "-")
