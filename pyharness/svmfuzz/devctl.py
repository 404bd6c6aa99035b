"""Client of the svmdev host control channel (docs/device-spec.md, "Host control channel").

Every message is an 8-byte header (magic 0xd5, type, payload length, tag) and its payload.
A reply carries the request's type | 0x80 and its tag; a malformed request gets an ERROR
reply; events (type 0xe0) arrive at any time, between replies too, and are queued.
"""
from __future__ import annotations

import collections
import enum
import socket
import struct
import time
from dataclasses import dataclass

MAGIC = 0xD5
MAX_PAYLOAD = 4096
NUM_COUNTERS = 13

HDR = struct.Struct("<BBHI")
ACCESS = struct.Struct("<QQQHBBB3x")
RESULT = struct.Struct("<QII")
STORM = struct.Struct("<QQHHB3x")
INVAL_MODE = struct.Struct("<IIII")
FAIL_DMA = struct.Struct("<II")
TLB_ENTRY = struct.Struct("<QQQHBBI")
EVENT = struct.Struct("<QQQIIHBBI")


class Msg(enum.IntEnum):
    PING = 0x01
    ACCESS = 0x02
    FAULT_STORM = 0x03
    INVAL_MODE = 0x04
    FAIL_DMA = 0x05
    COUNTERS = 0x06
    TLB = 0x07
    EVENTS = 0x08
    RELEASE = 0x09
    EVENT = 0xE0
    ERROR = 0xFF


REPLY = 0x80


class Status(enum.IntEnum):
    OK = 0
    BAD_OPCODE = 1
    BAD_CTX = 2
    CTX_DISABLED = 3
    BAD_ARG = 4
    BAD_VRAM = 5
    DMA_ERROR = 6
    BAD_PTE = 7
    CANCELLED = 8
    NO_FAULT = 9
    STALL_LIMIT = 10
    BAD_RING = 11
    ABORTED = 12
    STALLED = 13


class Kind(enum.IntEnum):
    READ = 0
    WRITE = 1
    ATOMIC = 2


class Aop(enum.IntEnum):
    ADD = 0
    XCHG = 1
    CMPXCHG = 2
    OR = 3
    AND = 4


class InvalMode(enum.IntEnum):
    NORMAL = 0
    DELAY = 1
    DROP = 2
    EARLY_ACK = 3


class Evt(enum.IntFlag):
    FAULT = 1 << 0
    INVALIDATE = 1 << 1
    STALE = 1 << 2
    ERROR = 1 << 3
    ACCESS_DONE = 1 << 4


class DevCtlError(Exception):
    pass


class DevCtlTimeout(DevCtlError):
    pass


@dataclass(frozen=True)
class Result:
    value: int
    status: int
    fault_id: int


@dataclass(frozen=True)
class TlbEntry:
    va: int
    target: int
    pte: int
    ctx: int
    huge: bool
    stale: bool


@dataclass(frozen=True)
class Event:
    stamp: int
    va: int
    arg: int
    kind: int
    code: int
    ctx: int
    access: int
    reason: int
    tag: int


def frame(msg_type: int, tag: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes, at most {MAX_PAYLOAD}")
    return HDR.pack(MAGIC, msg_type, len(payload), tag) + payload


def parse_result(payload: bytes) -> Result:
    return Result(*RESULT.unpack(payload))


def parse_tlb(payload: bytes) -> list[TlbEntry]:
    (count,) = struct.unpack_from("<I", payload)
    if len(payload) != 4 + count * TLB_ENTRY.size:
        raise DevCtlError(f"TLB reply of {len(payload)} bytes for {count} entries")
    out = []
    for i in range(count):
        at = 4 + i * TLB_ENTRY.size
        va, target, pte, ctx, huge, stale, _ = TLB_ENTRY.unpack_from(payload, at)
        out.append(TlbEntry(va, target, pte, ctx, bool(huge), bool(stale)))
    return out


def parse_event(payload: bytes) -> Event:
    return Event(*EVENT.unpack(payload))


class DevCtl:
    """One connection to a device's control channel (a connected stream socket)."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0):
        self.sock = sock
        self.timeout = timeout
        self.events: collections.deque[Event] = collections.deque()
        self._buf = bytearray()
        self.tag = 0  # of the last request; ACCESS_DONE events about it carry it

    # ---- framing ----
    def _message(self, deadline: float) -> tuple[int, int, bytes]:
        while True:
            if len(self._buf) >= HDR.size:
                magic, msg_type, length, tag = HDR.unpack_from(self._buf)
                if magic != MAGIC:
                    raise DevCtlError(f"bad magic {magic:#x} from the device")
                if len(self._buf) >= HDR.size + length:
                    payload = bytes(self._buf[HDR.size:HDR.size + length])
                    del self._buf[:HDR.size + length]
                    return msg_type, tag, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevCtlTimeout("control channel: timed out waiting for the device")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise DevCtlError("control channel closed by the device")
            self._buf += data

    def request(self, msg_type: int, payload: bytes = b"") -> bytes:
        """Sends a request and returns its reply payload; events seen meanwhile are queued."""
        self.tag = (self.tag + 1) & 0xFFFFFFFF or 1
        tag = self.tag
        self.sock.sendall(frame(msg_type, tag, payload))
        deadline = time.monotonic() + self.timeout
        while True:
            got_type, got_tag, body = self._message(deadline)
            if got_type == Msg.EVENT:
                self.events.append(parse_event(body))
            elif got_tag != tag:
                raise DevCtlError(f"reply type {got_type:#x} with tag {got_tag}, expected {tag}")
            elif got_type == Msg.ERROR:
                r = parse_result(body)
                raise DevCtlError(f"request {msg_type:#x} refused: {Status(r.status).name}")
            elif got_type == msg_type | REPLY:
                return body
            else:
                raise DevCtlError(f"reply type {got_type:#x} to request {msg_type:#x}")

    def next_event(self, timeout: float | None = None) -> Event:
        if self.events:
            return self.events.popleft()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            got_type, got_tag, body = self._message(deadline)
            if got_type == Msg.EVENT:
                return parse_event(body)
            raise DevCtlError(f"unsolicited message type {got_type:#x} tag {got_tag}")

    def poll_events(self, timeout: float) -> None:
        """Queues the events that arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                got_type, got_tag, body = self._message(deadline)
                if got_type != Msg.EVENT:
                    raise DevCtlError(f"unsolicited message type {got_type:#x} tag {got_tag}")
                self.events.append(parse_event(body))
        except DevCtlTimeout:
            pass

    # ---- requests ----
    def ping(self) -> tuple[int, int]:
        """(interface version, STATUS register)."""
        version, status = struct.unpack("<II", self.request(Msg.PING))
        return version, status

    def access(self, ctx: int, va: int, kind: Kind, size: int = 8, value: int = 0,
               compare: int = 0, aop: Aop = Aop.ADD) -> Result:
        return parse_result(self.request(Msg.ACCESS, ACCESS.pack(va, value, compare, ctx, kind,
                                                                 size, aop)))

    def read(self, ctx: int, va: int, size: int = 8) -> int:
        r = self.access(ctx, va, Kind.READ, size)
        if r.status != Status.OK:
            raise DevCtlError(f"read of {va:#x} in context {ctx}: {Status(r.status).name}")
        return r.value

    def write(self, ctx: int, va: int, value: int, size: int = 8) -> None:
        r = self.access(ctx, va, Kind.WRITE, size, value)
        if r.status != Status.OK:
            raise DevCtlError(f"write of {va:#x} in context {ctx}: {Status(r.status).name}")

    def fault_storm(self, ctx: int, va: int, stride: int, count: int, kind: Kind) -> Result:
        return parse_result(self.request(Msg.FAULT_STORM, STORM.pack(va, stride, ctx, count, kind)))

    def inval_mode(self, mode: InvalMode, count: int, commands: int = 0) -> Result:
        return parse_result(self.request(Msg.INVAL_MODE, INVAL_MODE.pack(mode, count, commands, 0)))

    def fail_dma(self, skip: int, count: int) -> Result:
        return parse_result(self.request(Msg.FAIL_DMA, FAIL_DMA.pack(skip, count)))

    def counters(self) -> list[int]:
        return list(struct.unpack(f"<{NUM_COUNTERS}Q", self.request(Msg.COUNTERS)))

    def tlb(self) -> list[TlbEntry]:
        return parse_tlb(self.request(Msg.TLB))

    def set_events(self, mask: Evt) -> Result:
        return parse_result(self.request(Msg.EVENTS, struct.pack("<I", mask)))

    def release(self) -> Result:
        return parse_result(self.request(Msg.RELEASE))
