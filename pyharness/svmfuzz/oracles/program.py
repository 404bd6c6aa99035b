"""The oracles of one program's run, each giving findings with kernel-style titles.

judge() puts together what the executor returned and what the kernel printed
while the program ran:

- console: every kernel report of the program's console window (console.parse),
  the driver's own "livelock suspected" and "unbalanced" lines included;
- livelock: the watchdog found the program past a deadline while the driver's
  retry counters were still rising: "livelock in <loop>";
- unbalanced notifier: the driver's balance check after the program
  (SVMDEV_IOC_CHECK) says a start is outstanding:
  "unbalanced mmu_notifier start/end in check";
- data corruption: a shadow check found a byte that is not what the program's
  ops left there: "data corruption in <op>" ("... at exit" for the check when
  a process ends);
- device stale access: a device reported on its control channel that an
  access used a translation after the driver's invalidation of it was
  acknowledged: "device stale access in ctx <n> at <page>";
- unkillable task: a task of the program still alive after SIGKILL (the
  executor's STUCK), named after where it sleeps in the kernel, with the
  hung-task detector's title: "INFO: task hung in <frame>";
- executor lost, VM lost, no output: the guest stopped answering
  (console.host_finding; a kernel report in the console names it instead).

A kernel report comes first: it explains the symptoms the other oracles see.
Two oracles that see the same bug give it the same title (the driver's loop
names, its "check"), and each title is reported once.
"""

from __future__ import annotations

import hashlib

from svmfuzz import devctl, protocol
from svmfuzz.oracles import console
from svmfuzz.oracles.console import Finding

Drv = protocol.Drv

EXCLUSIVE_LOOP = "svmdev_exclusive"
# The title of a device-exclusive loop that only ever meets THP tail pages.
THP_REFUSAL = "device-exclusive refused for THP tail pages"
# The driver's retry loops by the counter their retries raise, named as in the
# driver's "livelock suspected in <loop>" line.
RETRY_LOOPS = {
    Drv.HMM_BUSY: "svmdev_range_fault",
    Drv.READ_RETRY: "svmdev_range_fault",
    Drv.EXCL_RETRY: EXCLUSIVE_LOOP,
}
# The driver names the place of a balance check; the executor's is SVMDEV_IOC_CHECK.
BALANCE_CHECK = "check"
# Findings after which the kernel still reports the next bug: the driver's own
# oracles and the shadow. After any other report the next program deserves a
# fresh kernel (lockdep and KASAN report once, a WARN may leave state behind).
DRIVER_CATEGORIES = frozenset({"livelock", "notifier", "corruption", "stale"})
_MAX_MISMATCH_LINES = 16


def judge(result: protocol.ExecResult | None, window: str, lost: str = "",
          detail: str = "", device_events: list[devctl.Event] = ()) -> list[Finding]:
    """Findings of one program, the primary first. `window` is the console the
    kernel printed while it ran; `lost` the console.host_finding kind when the
    guest stopped answering (result is None then), `detail` why;
    `device_events` what the devices' control channels reported meanwhile."""
    found = console.parse(window)
    if result is None:
        return _once(found) or [console.host_finding(lost, window, detail)]
    return _once([*found, *_livelock(result), *_stuck(result), *_imbalance(result),
                  *_corruption(result), *_stale(device_events)])


def _once(findings: list[Finding]) -> list[Finding]:
    """The first finding of each title: a hung task reported every few
    seconds, or a livelock both the driver and the watchdog saw, is one bug."""
    titles = set()
    out = []
    for f in findings:
        if f.title not in titles:
            titles.add(f.title)
            out.append(f)
    return out


def _finding(title: str, category: str, frame: str, report: list[str]) -> Finding:
    return Finding(title=title, category=category, frame=frame, report="\n".join(report),
                   signature=hashlib.sha256(title.encode()).hexdigest()[:16])


def _where(result: protocol.ExecResult) -> str:
    if result.status == protocol.Status.HUNG and 0 <= result.detail < len(result.ops):
        return f"op {result.detail} ({protocol.op_name(result.ops[result.detail].code)})"
    return "the program"


def _stuck(result: protocol.ExecResult) -> list[Finding]:
    if result.status != protocol.Status.STUCK:
        return []
    f = console.stuck_finding(result.message)
    f.report = f"{result.title()}\n{result.message}"
    return [f]


def _livelock(result: protocol.ExecResult) -> list[Finding]:
    rose = {c: result.watchdog_deltas[c] for c in RETRY_LOOPS
            if c < len(result.watchdog_deltas) and result.watchdog_deltas[c]}
    if not rose:
        return []
    loop = RETRY_LOOPS[max(rose, key=rose.get)]
    counts = ", ".join(f"{c.name.lower()} +{n}" for c, n in rose.items())
    report = [f"{_where(result)} passed its deadline while the driver's retry counters "
              f"kept rising: {counts} in the watchdog's last look"]
    thp = _delta(result, Drv.EXCL_THP)
    if loop == EXCLUSIVE_LOOP and thp:
        # The kernel refuses these pages whatever the driver does: a limit of
        # make_device_exclusive_range(), listed in corpus/known-outcomes.
        return [_finding(f"{THP_REFUSAL} in {loop}", "livelock", loop,
                         report + [f"exclusive_thp +{thp}: the pages refused were tail pages "
                                   "of a PTE-mapped THP"])]
    return [_finding(f"livelock in {loop}", "livelock", loop, report)]


def _delta(result: protocol.ExecResult, counter: Drv) -> int:
    d = result.watchdog_deltas
    return d[counter] if counter < len(d) else 0


def _imbalance(result: protocol.ExecResult) -> list[Finding]:
    c = result.counters
    if len(c) <= protocol.BALANCED or c[protocol.BALANCED]:
        return []
    return [_finding(f"unbalanced mmu_notifier start/end in {BALANCE_CHECK}", "notifier",
                     BALANCE_CHECK,
                     [f"the driver's balance check after the program: starts "
                      f"{c[protocol.MN_STARTS]} ends {c[protocol.MN_ENDS]} "
                      f"refused {c[protocol.MN_REFUSED]}"])]


def _corruption(result: protocol.ExecResult) -> list[Finding]:
    by_place: dict[str, list[protocol.Mismatch]] = {}
    for m in result.mismatches:
        if m.op == protocol.END_OF_PROCESS:
            place = "at exit"
        elif m.op < len(result.ops):
            place = f"in {protocol.op_name(result.ops[m.op].code)}"
        else:
            place = f"in op {m.op}"
        by_place.setdefault(place, []).append(m)
    out = []
    for place, found in by_place.items():
        lines = [f"{'end of process' if m.op == protocol.END_OF_PROCESS else f'op {m.op}'}: "
                 f"buf={m.buffer} page={m.page} byte={m.offset} expected {m.expected:#04x} "
                 f"found {m.actual:#04x}" for m in found[:_MAX_MISMATCH_LINES]]
        out.append(_finding(f"data corruption {place}", "corruption", place.split(" ", 1)[1],
                            lines))
    return out


def _stale(events: list[devctl.Event]) -> list[Finding]:
    """One finding for the program, named after its first stale access."""
    stale = [e for e in events if e.kind == devctl.Evt.STALE]
    if not stale:
        return []
    first = stale[0]
    place = f"ctx {first.ctx} at {first.va & ~0xFFF:#x}"
    lines = [f"ctx {e.ctx} va {e.va:#x}: a {devctl.Kind(e.access).name.lower()} through a "
             f"translation to {e.arg:#x} whose invalidation was acknowledged"
             for e in stale[:_MAX_MISMATCH_LINES]]
    return [_finding(f"device stale access in {place}", "stale", place, lines)]
