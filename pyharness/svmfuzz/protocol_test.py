import dataclasses
import re
import struct
from pathlib import Path

import pytest

from svmfuzz import native
from svmfuzz import protocol as p
from svmfuzz.errors import SvmfuzzError

# Encoded by fuzz/protocol/protocol_test.cc (ExecResultLayout) from the same result.
SAMPLE_RESULT_HEX = (
    "887766554433221102000000ffffffffd20400000300000000000300000000000000000000000000"
    "0a0000000c030b005f000000ffffffffffffffff020000000a010500000000000000000000000000"
    "0000000002000000020000000500ff0fff030000abcdffffffff0000000000000000000103000000"
    "01000000000000000200000000000000030000000000000002000000000000000000000009000000"
    "000000000200000000000081ffffffff10000081ffffffff01000000000000a0ffffffff03000000"
    "776879")


def sample_result() -> p.ExecResult:
    F = p.OpFlag
    return p.ExecResult(
        0x1122334455667788, p.Status.HUNG, -1, 1234,
        ops=[p.OpResult(0, 0, F.STARTED | F.DONE, 0, 0, 10),
             p.OpResult(12, 3, F.STARTED | F.DONE | F.UNSUPPORTED, 95, -1, 2),
             p.OpResult(10, 1, F.STARTED | F.TIMED_OUT, 0, 0, 0)],
        mismatches=[p.Mismatch(2, 5, 4095, 1023, 0xab, 0xcd),
                    p.Mismatch(p.END_OF_PROCESS, 0, 0, 0, 0, 1)],
        counters=[1, 2, 3], watchdog_deltas=[0, 9], cover=[0xffffffff81000000, 0xffffffff81000010],
        remote_cover=[0xffffffffa0000000], message="why")


@pytest.fixture(scope="module")
def codec():
    """The RESULT codec is the runner module's."""
    try:
        native.module()
    except SvmfuzzError as e:
        pytest.skip(str(e))


def test_result_bytes_match_the_executor(codec):
    assert sample_result().encode().hex() == SAMPLE_RESULT_HEX
    assert p.ExecResult.decode(bytes.fromhex(SAMPLE_RESULT_HEX)) == sample_result()


# The C++ decoder says only that a payload does not decode, not which check refused it.
def test_result_rejects_truncation_and_trailing_bytes(codec):
    data = sample_result().encode()
    for n in range(len(data)):
        with pytest.raises(p.ProtocolError, match="^bad RESULT"):
            p.ExecResult.decode(data[:n])
    with pytest.raises(p.ProtocolError, match="^bad RESULT"):
        p.ExecResult.decode(data + b"\0")


def test_huge_counts_are_refused(codec):
    # Refused before anything is allocated for them: no MemoryError.
    head = struct.pack("<QIiI", 1, 0, 0, 0)
    for zeros in range(7):  # ops, mismatches, the four lists of u64, message
        data = head + struct.pack(f"<{zeros}I", *[0] * zeros) + struct.pack("<I", 0xFFFFFFFF)
        with pytest.raises(p.ProtocolError, match="^bad RESULT"):
            p.ExecResult.decode(data)


def test_unknown_status_is_refused(codec):
    data = bytearray(sample_result().encode())
    data[8] = 9  # the status is the u32 after the id
    with pytest.raises(p.ProtocolError, match="^bad RESULT: 9 is not a valid Status"):
        p.ExecResult.decode(bytes(data))


def test_a_message_that_is_not_utf8_is_replaced(codec):
    data = p.ExecResult(1, p.Status.EXECUTOR_ERROR, message="abc").encode()
    assert p.ExecResult.decode(data[:-3] + b"a\xffc").message == "a\ufffdc"


def test_titles():
    assert p.ExecResult(1, p.Status.OK).title() == "ok"
    assert p.ExecResult(1, p.Status.CRASHED, 11).title() == "crashed with signal 11"
    assert p.ExecResult(1, p.Status.HUNG, 3).title() == "hung: op 3 passed its deadline"
    assert p.ExecResult(1, p.Status.STUCK, ord("D")).title() == "stuck in state D after SIGKILL"
    assert p.ExecResult(1, p.Status.OOM_KILLED).title() == "oom-killed"


UAPI = Path(__file__).resolve().parents[2] / "include" / "svmdev" / "svmdev_uapi.h"


def test_driver_counters_match_the_uapi_header():
    text = UAPI.read_text()
    defined = {m[1]: int(m[2]) for m in re.finditer(r"#define SVMDEV_CTR_(\w+)\s+(\d+)", text)}
    assert defined == {d.name: d.value for d in p.Drv}
    assert int(re.search(r"#define SVMDEV_NUM_CTRS\s+(\d+)", text)[1]) == len(p.Drv)
    assert int(re.search(r"__u64 hw\[(\d+)\];", text)[1]) == p.HW_COUNTERS


def test_counter_layout_is_the_executors():
    try:
        layout = native.COUNTER_LAYOUT
    except Exception as e:  # no runner module built
        pytest.skip(str(e))
    assert layout == {"hw": 0, "drv": p.HW_COUNTERS, "mn_starts": p.MN_STARTS,
                      "mn_ends": p.MN_ENDS, "mn_refused": p.MN_REFUSED,
                      "balanced": p.BALANCED, "count": p.BALANCED + 1}


def test_knob_names_are_the_uapi_structs_and_the_executors():
    struct = re.search(r"struct svmdev_knobs \{(.*?)\};", UAPI.read_text(), re.S)[1]
    members = re.findall(r"__u64 (\w+);", struct)
    assert [f.name for f in dataclasses.fields(p.Knobs)] == members
    try:
        names = native.KNOB_NAMES
    except Exception as e:  # no runner module built
        pytest.skip(str(e))
    assert list(names) == members
