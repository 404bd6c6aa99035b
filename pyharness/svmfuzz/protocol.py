"""Protocol v2 between the host and the in-guest executor: the Python side of
fuzz/executor/protocol.h (layout documented in fuzz/executor/PROTOCOL.md).

Frames are a 12-byte header (magic "SVMF", type, payload length; u32
little-endian each) and the payload.
"""

import enum
import struct
from dataclasses import dataclass, field

from svmfuzz.errors import SvmfuzzError

VERSION = 2
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


class Feature(enum.IntFlag):
    KCOV = 1 << 0
    KCOV_REMOTE = 1 << 1
    DRIVER = 1 << 2
    FAIL_NTH = 1 << 3
    FAILSLAB = 1 << 4
    FAIL_PAGE_ALLOC = 1 << 5


EXEC_COVER = 1 << 0


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

    _HEAD = struct.Struct("<QIIII")

    def encode(self) -> bytes:
        return self._HEAD.pack(self.id, self.flags, self.op_timeout_ms, self.program_timeout_ms,
                               self.cover_cap) + self.program

    @classmethod
    def decode(cls, payload: bytes) -> "ExecRequest":
        if len(payload) < cls._HEAD.size:
            raise ProtocolError("short EXEC")
        id_, flags, op_ms, prog_ms, cap = cls._HEAD.unpack_from(payload)
        return cls(id_, payload[cls._HEAD.size:], flags, op_ms, prog_ms, cap)


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
        for pcs in (self.counters, self.cover, self.remote_cover):
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
        for name in ("counters", "cover", "remote_cover"):
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
