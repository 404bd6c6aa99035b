"""The judgement of one program's run from the values the C++ runner gives
(fuzz/runner/runner.h Outcome): the findings, titled as triage titles them,
and whether the VM life must end. The runner's Python front end
(svmfuzz.runner) and the campaign harness (fuzz/campaign/judge.cc, through
an interpreter embedded in it) both judge through here, so a campaign saves
and names its findings by the titles triage shows.
"""

from __future__ import annotations

from svmfuzz import devctl, protocol
from svmfuzz.oracles import console, program
from svmfuzz.oracles.console import Finding

# fuzz/runner/runner.h Lost, in its order.
LOST_KINDS = ("", console.NO_OUTPUT, console.EXECUTOR_LOST, console.VM_LOST, console.VM_FROZEN)
# The title of a RESULT this side cannot decode (an unknown status, say).
UNREADABLE_RESULT = "executor sent an unreadable result"


def decode(result: bytes | None) -> tuple[protocol.ExecResult | None, Finding | None]:
    """The decoded RESULT, or the finding that it cannot be read."""
    if result is None:
        return None, None
    try:
        return protocol.ExecResult.decode(result), None
    except protocol.ProtocolError as e:
        report = f"{e}\nRESULT payload: {bytes(result[:64]).hex()}"
        return None, Finding(title=UNREADABLE_RESULT, category="lost", frame="", report=report)


def findings(result: protocol.ExecResult | None, window: str, lost_kind: int, lost: str,
             events: list[devctl.Event]) -> list[Finding]:
    """Every oracle on one run, the primary finding first."""
    return program.judge(result, window, LOST_KINDS[int(lost_kind)], lost, device_events=events)


def ends_life(found: list[Finding], lost: str) -> Finding | None:
    """The finding that ends the VM life, if one does: after a kernel report
    (anything but the driver's own oracles and the shadow) the next program
    deserves a fresh kernel, as lockdep and KASAN report once and a WARN may
    leave state behind. A lost guest has ended its life already."""
    if lost:
        return None
    return next((f for f in found if f.category not in program.DRIVER_CATEGORIES), None)


def judge(result: bytes | None, window: str, lost_kind: int, lost: str,
          stale: list[bytes]) -> tuple[list[tuple[str, str]], bool]:
    """For the campaign harness: (title, category) of each finding, the
    primary first, and whether the life must end."""
    decoded, unreadable = decode(result)
    if unreadable is not None:
        return [(unreadable.title, unreadable.category)], True
    found = findings(decoded, window, lost_kind, lost,
                     [devctl.parse_event(bytes(e)) for e in stale])
    return [(f.title, f.category) for f in found], ends_life(found, lost) is not None
