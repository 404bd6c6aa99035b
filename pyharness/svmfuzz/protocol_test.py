import re
import struct
from pathlib import Path

import pytest

from svmfuzz import protocol as p

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


def test_frame_layout_matches_the_executor():
    assert p.frame(p.Msg.PING, b"\xaa") == b"SVMF" + bytes([2, 0, 0, 0, 1, 0, 0, 0, 0xaa])


def test_result_bytes_match_the_executor():
    assert sample_result().encode().hex() == SAMPLE_RESULT_HEX
    assert p.ExecResult.decode(bytes.fromhex(SAMPLE_RESULT_HEX)) == sample_result()


def test_result_rejects_truncation_and_trailing_bytes():
    data = sample_result().encode()
    for n in range(len(data)):
        with pytest.raises(p.ProtocolError):
            p.ExecResult.decode(data[:n])
    with pytest.raises(p.ProtocolError, match="after RESULT"):
        p.ExecResult.decode(data + b"\0")


def test_huge_counts_are_refused():
    data = struct.pack("<QIiI", 1, 0, 0, 0) + struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(p.ProtocolError, match="past the end"):
        p.ExecResult.decode(data)


# Encoded by fuzz/protocol/protocol_test.cc (ExecRequestKnobsLayout) from the same request.
KNOBS_REQUEST_HEX = (
    "05000000000000000000000000000000000000000000000008000000000000000000000000000000"
    "00000000000000000000000000000000000000000100000000000000000000000000000000000000"
    "00000000000000000000000022")


def test_request_knob_bytes_match_the_executor():
    req = p.ExecRequest(5, b"\x22", 0, 0, 0, 0, p.Knobs(break_livelock=1))
    assert req.encode().hex() == KNOBS_REQUEST_HEX
    assert p.ExecRequest.decode(req.encode()) == req
    # Fewer values leave the rest 0, as in the executor; more are refused.
    head = bytes.fromhex(KNOBS_REQUEST_HEX)[:24]
    assert p.ExecRequest.decode(head + struct.pack("<IQ", 1, 3)).knobs == p.Knobs(3)
    with pytest.raises(p.ProtocolError, match="9 knobs"):
        p.ExecRequest.decode(head + struct.pack("<I9Q", 9, *range(9)))


def test_request_and_ready_round_trip():
    req = p.ExecRequest(9, b"\x00\x01", p.EXEC_COVER, 100, 200, 300)
    assert p.ExecRequest.decode(req.encode()) == req
    assert req.encode()[:8] == (9).to_bytes(8, "little")
    assert req.encode()[24:28] == bytes(4)  # no knobs: the driver's defaults
    ready = p.Ready(2, p.Feature.KCOV | p.Feature.FAIL_NTH, "6.12")
    assert p.Ready.decode(ready.encode()) == ready


def test_frame_reader_splits_and_resynchronises():
    stream = p.frame(p.Msg.PING, b"abc") + b"junkSV" + p.frame(p.Msg.BYE)
    r = p.FrameReader()
    frames = []
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
        while True:
            try:
                f = r.next()
            except p.ProtocolError:
                frames.append("bad")
                continue
            if f is None:
                break
            frames.append(f)
    assert frames == [(p.Msg.PING, b"abc"), "bad", (p.Msg.BYE, b"")]


def test_titles():
    assert p.ExecResult(1, p.Status.OK).title() == "ok"
    assert p.ExecResult(1, p.Status.CRASHED, 11).title() == "crashed with signal 11"
    assert p.ExecResult(1, p.Status.HUNG, 3).title() == "hung: op 3 passed its deadline"
    assert p.ExecResult(1, p.Status.STUCK, ord("D")).title() == "stuck in state D after SIGKILL"
    assert p.ExecResult(1, p.Status.OOM_KILLED).title() == "oom-killed"


# Encoded by fuzz/protocol/protocol_test.cc (DeviceMessagesLayout).
DEVICE_REQUEST_HEX = "0403020116010605081000000010000002000000000000000a00000000000000"
DEVICE_REPLY_HEX = "040302010d000000feffffffffffffff"


def test_device_message_bytes_match_the_executor():
    req = p.DeviceRequest(0x01020304, p.OP_NAMES.index("dev_access"), 1, 0x0506, 0x100000001008,
                          2, 0x0A)
    assert req.encode().hex() == DEVICE_REQUEST_HEX
    assert p.DeviceRequest.decode(bytes.fromhex(DEVICE_REQUEST_HEX)) == req
    reply = p.DeviceReply(0x01020304, 13, 0xFFFFFFFFFFFFFFFE)
    assert reply.encode().hex() == DEVICE_REPLY_HEX
    assert p.DeviceReply.decode(bytes.fromhex(DEVICE_REPLY_HEX)) == reply
    with pytest.raises(p.ProtocolError):
        p.DeviceReply.decode(bytes.fromhex(DEVICE_REPLY_HEX) + b"\0")


UAPI = Path(__file__).resolve().parents[2] / "include" / "svmdev" / "svmdev_uapi.h"


def test_driver_counters_match_the_uapi_header():
    text = UAPI.read_text()
    defined = {m[1]: int(m[2]) for m in re.finditer(r"#define SVMDEV_CTR_(\w+)\s+(\d+)", text)}
    assert defined == {d.name: d.value for d in p.Drv}
    assert int(re.search(r"#define SVMDEV_NUM_CTRS\s+(\d+)", text)[1]) == len(p.Drv)
    assert int(re.search(r"__u64 hw\[(\d+)\];", text)[1]) == p.HW_COUNTERS


def test_counter_layout_is_the_executors():
    from svmfuzz import native
    try:
        layout = native.COUNTER_LAYOUT
    except Exception as e:  # no runner module built
        pytest.skip(str(e))
    assert layout == {"hw": 0, "drv": p.HW_COUNTERS, "mn_starts": p.MN_STARTS,
                      "mn_ends": p.MN_ENDS, "mn_refused": p.MN_REFUSED,
                      "balanced": p.BALANCED, "count": p.BALANCED + 1}
