import struct

import pytest

from svmfuzz import protocol as p

# Encoded by fuzz/executor/protocol_test.cc (ExecResultLayout) from the same result.
SAMPLE_RESULT_HEX = (
    "887766554433221102000000ffffffffd204000003000000000003000000000000000000000000000a"
    "0000000c030b005f000000ffffffffffffffff020000000a01050000000000000000000000000000"
    "00000002000000020000000500ff0fff030000abcdffffffff000000000000000000010300000001"
    "00000000000000020000000000000003000000000000000200000000000081ffffffff10000081ff"
    "ffffff01000000000000a0ffffffff03000000776879")


def sample_result() -> p.ExecResult:
    F = p.OpFlag
    return p.ExecResult(
        0x1122334455667788, p.Status.HUNG, -1, 1234,
        ops=[p.OpResult(0, 0, F.STARTED | F.DONE, 0, 0, 10),
             p.OpResult(12, 3, F.STARTED | F.DONE | F.UNSUPPORTED, 95, -1, 2),
             p.OpResult(10, 1, F.STARTED | F.TIMED_OUT, 0, 0, 0)],
        mismatches=[p.Mismatch(2, 5, 4095, 1023, 0xab, 0xcd),
                    p.Mismatch(p.END_OF_PROCESS, 0, 0, 0, 0, 1)],
        counters=[1, 2, 3], cover=[0xffffffff81000000, 0xffffffff81000010],
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


def test_request_and_ready_round_trip():
    req = p.ExecRequest(9, b"\x00\x01", p.EXEC_COVER, 100, 200, 300)
    assert p.ExecRequest.decode(req.encode()) == req
    assert req.encode()[:8] == (9).to_bytes(8, "little")
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
