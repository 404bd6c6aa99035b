"""The svmdev host control channel (docs/device-spec.md, "Host control channel") as Python
sees it: its message types, statuses, event kinds and the records the client hands over.
The client is the C++ runner's (fuzz/runner/devctl.h): native.DevCtl, or a VM's or a
runner's devctl(index).

Every message is an 8-byte header (magic 0xd5, type, payload length, tag) and its payload.
A reply carries the request's type | 0x80 and its tag; a malformed request gets an ERROR
reply; events (type 0xe0) arrive at any time, between replies too.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0xD5
MAX_PAYLOAD = 4096
NUM_COUNTERS = 13

HDR = struct.Struct("<BBHI")
RESULT = struct.Struct("<QII")
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
    """The device refused a request, did not answer in time, or its channel failed."""


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


def parse_event(payload: bytes) -> Event:
    return Event(*EVENT.unpack(payload))
