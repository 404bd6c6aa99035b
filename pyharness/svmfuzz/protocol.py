"""What the host's Python reads of the protocol between the host and the
in-guest executor (fuzz/protocol/protocol.h, docs/executor-protocol.md): the
executor's results, which the C++ runner hands over as bytes and its RESULT
codec decodes (native.decode_result), and the names and numbers in them.
Framing, requests and device messages are the C++ runner's alone.
"""

import enum
from dataclasses import astuple, dataclass, field, fields

from svmfuzz import native
from svmfuzz.errors import SvmfuzzError

class ProtocolError(SvmfuzzError):
    pass


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


@dataclass
class OpResult:
    code: int
    thread: int
    flags: OpFlag
    err: int
    ret: int
    duration_us: int


@dataclass
class Mismatch:
    op: int
    buffer: int
    offset: int
    page: int
    expected: int
    actual: int


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

    def encode(self) -> bytes:
        """The RESULT payload of this result, as the executor sends it."""
        return native.encode_result({**vars(self), "ops": [astuple(o) for o in self.ops],
                                     "mismatches": [astuple(m) for m in self.mismatches]})

    @classmethod
    def decode(cls, payload: bytes) -> "ExecResult":
        """The result a RESULT payload holds; ProtocolError if it holds none."""
        try:
            d = native.decode_result(payload)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        try:
            status = Status(d["status"])
        except ValueError as e:  # the C++ decoder takes any number; one not named is unreadable
            raise ProtocolError(f"bad RESULT: {e}") from None
        return cls(d["id"], status, d["detail"], d["duration_us"],
                   [OpResult(code, thread, OpFlag(flags), err, ret, us)
                    for code, thread, flags, err, ret, us in d["ops"]],
                   [Mismatch(*m) for m in d["mismatches"]],
                   d["counters"], d["watchdog_deltas"], d["cover"], d["remote_cover"],
                   d["message"])

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
