"""Kernel console oracle.

parse() finds every report in a guest console log and gives each one a
syzkaller-style title ("KASAN: slab-use-after-free Read in hmm_range_fault",
"WARNING in migrate_vma_setup", "possible deadlock in X", "INFO: task hung in
X", ...), the frame that names it, its stacks, a category and a signature.
The svmdev driver's own oracle lines are reports too ("livelock in X",
"unbalanced mmu_notifier start/end in X"). host_finding() makes a finding for
a VM or an executor that stopped answering.

Categories: kasan, ubsan, warning, lockdep, hang, stall, lockup, crash, bug,
leak, panic, livelock, notifier, lost.

    python3 -m svmfuzz.oracles.console LOG    # findings as JSON; "-" reads stdin
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass, field

# printk's prefix: level, time, caller (CONFIG_PRINTK_CALLER). Searched rather
# than anchored because user-space output without a newline can precede it.
_PREFIX = re.compile(r"(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*([CT]\d+)\])? ?")
# kmemleak prints each line of a leak through pr_warn with its own prefix.
_KMEMLEAK_PREFIX = re.compile(r"^kmemleak: (?=unreferenced object|\s)")

_FUNC = r"[A-Za-z_][\w.$]*"
_FRAME = re.compile(
    r"^\s*(?:\[<?[0-9a-f]+>?\]\s*)*(?P<q>\?\s+)?(?P<func>" + _FUNC + r")"
    r"\+0x(?P<off>[0-9a-f]+)/0x(?P<size>[0-9a-f]+)"
    r"(?:\s+\[(?P<mod>[\w-]+)\])?(?:\s+(?P<file>[^\s:\[]+):(?P<line>\d+))?"
    r"(?:\s+\[(?P<mod2>[\w-]+)\])?")
_INLINE = re.compile(
    r"^\s*(?P<q>\?\s+)?(?P<func>" + _FUNC + r")\s+(?P<file>[^\s:]+):(?P<line>\d+)\s+\[inline\]")
_RIP = re.compile(r"^\s*RIP: 0010:(?P<rest>.*)$")
_STACK_START = re.compile(
    r"^\s*(Call Trace|backtrace(?: \(crc [0-9a-f]+\))?|(?:Allocated|Freed) by task \d+"
    r"|(?:Second to last|Last) potentially related work creation)(?: [^:]*)?:\s*$")
_MARKER = re.compile(r"^\s*<(/?)(TASK|IRQ|NMI|SOFTIRQ|EOI)>\s*$")
_REGS = re.compile(
    r"^\s*(?:RIP|Code|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|FS|GS|CS|DS|ES|CR\d|DR\d|PKRU|EFLAGS"
    r"|ORIG_RAX)\s*:")
_NMI_TRACE = re.compile(r"Sending NMI from CPU|NMI backtrace for cpu")
_PANIC = re.compile(r"Kernel panic - not syncing")
_PANIC_END = re.compile(r"---\[ end Kernel panic")
_TRACE_END = re.compile(r"^---\[ end trace")
_RULE = re.compile(r"^={20,}\s*$")
# Lines printed just before a report's header that belong to it: the
# separator that opens it and the page dump that precedes VM_BUG_ON.
_CUT_HERE = re.compile(r"^-+\[ cut here \]-+\s*$")
_PAGE_DUMP = re.compile(
    r"^(?:page: |folio: |head: |flags: |raw: |page_type: |memcg:|aops:|anon flags:|file flags:"
    r"|page dumped because|VM_BUG_ON\w*\()")
_TIME_IN_TITLE = re.compile(r"\[\s*\d+\.\d+\]")
_MAX_REPORT_LINES = 3000
# How far past a report's end a "Kernel panic" is still taken to be its own.
_PANIC_REACH = 60
_SIGNATURE_DEPTH = 4
# How far below its header an optional stack may start and still be the report's.
_OPTIONAL_STACK_REACH = 40

# Frames that say how a report was printed, not where the bug is.
_GENERIC = re.compile("|".join([
    r"^_*dump_stack", r"^show_(?:regs|stack|trace)", r"^print_report", r"^print_address_description",
    r"^_*kasan", r"^__asan", r"^kfence", r"^instrument_", r"^check_memory_region", r"^_*ubsan",
    r"^panic$", r"^check_panic_on_warn", r"^__warn", r"^warn_", r"^report_bug", r"^handle_bug",
    r"^exc_", r"^asm_", r"^_*sysvec_", r"^do_(?:error_)?trap", r"^_*die(?:_addr|_body)?$",
    r"^oops_", r"^page_fault_oops", r"^kernelmode_fixup_or_oops", r"^_*bad_area",
    r"^do_(?:user|kern)_addr_fault", r"^fixup_exception",
    r"lockdep", r"^_*lock_(?:acquire|release|acquired|contended)", r"^check_noncircular",
    r"^check_prevs?_add", r"^validate_chain", r"^print_\w+_bug", r"^mark_(?:lock|usage)",
    r"^_*might_(?:sleep|resched|fault|alloc)",
    r"^_raw_", r"^do_raw_", r"^__raw_", r"^queued_\w*lock", r"^native_queued", r"^_*spin_",
    r"^_*mutex_(?:lock|unlock|trylock)", r"^__mutex", r"^_*(?:down|up)(?:_read|_write)?(?:_\w+)?$",
    r"^_*rwsem", r"^osq_", r"^_*refcount_",
    r"^_*mem(?:cpy|set|move|cmp)", r"^str(?:n?len|n?cmp|s?cpy|lcpy)$", r"^_*copy_(?:to|from)_user",
    r"^copy_user_", r"^rep_movs", r"^__(?:put|get)_user",
    r"^_*v?printk", r"^_*dev_(?:printk|err|warn|info)", r"^__list_(?:add|del)", r"^list_(?:add|del)",
    r"^__pfx_", r"^debug_smp_processor_id", r"^check_preemption_disabled",
]))
_LEAK_SKIP = re.compile(
    r"kmemleak|kmalloc|kzalloc|kcalloc|kvmalloc|kvzalloc|vmalloc|kmem_cache|slab|krealloc|kstrdup"
    r"|kmemdup|_noprof$|^_*alloc_pages|^alloc_|^__alloc|create_object|^xa_|^idr_")
_SLEEP_SKIP = re.compile(r"^_*schedule|^preempt_|alloc|^kmem_cache|kmalloc|^fs_reclaim|_noprof$")
_HANG_SKIP = ("sched", "_lock", "_slowlock", "down", "completion", "kthread", "wait", "synchronize",
              "context_switch", "__switch_to", "cancel_delayed_work", "rwsem", "mutex")
_HANG_ANCHOR = re.compile(r"^(?:synchronize_(?:rcu|srcu|net|sched))")
# A stalled CPU is caught at a random point of the loop it spins in; the SVM
# call the loop runs under is what stays the same from one report to the next.
_SVM_ENTRY = re.compile(
    r"^(?:hmm_range_fault|migrate_vma_(?:setup|pages|finalize)|migrate_device_(?:range|pages|finalize)"
    r"|make_device_exclusive(?:_range)?)$")
# Otherwise the frame called from the code that dispatched the work (syscall
# entry, workqueue, page fault, the driver's ioctl switch) names the loop.
_STALL_ANCHOR = re.compile(
    r"^(?:process_one_work|worker_thread|kthread|ret_from_fork\w*|smpboot_thread_fn|do_syscall_\w+"
    r"|__(?:x64|ia32|do|se)_sys_\w+|ksys_\w+|vfs_(?:ioctl|read|write|iter_read|iter_write|open)"
    r"|call_timer_fn|__run_timers|run_timer_softirq|handle_softirqs|__do_softirq|run_ksoftirqd"
    r"|_*handle_mm_fault|task_work_run|__fput|exit_to_user_mode\w*|svmdev_ioctl|dmirror_ioctl)$")
_STALL_SKIP = re.compile(r"rcu|watchdog|hrtimer|^tick_|nmi|apic|^update_process_times")
_COMPILER_SUFFIX = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv)(?:\.\d+)?)+$")

EXECUTOR_LOST = "executor-lost"
VM_LOST = "vm-lost"
NO_OUTPUT = "no-output"
VM_FROZEN = "vm-frozen"
_HOST_TITLES = {
    EXECUTOR_LOST: "executor lost",
    VM_LOST: "lost connection to test machine",
    NO_OUTPUT: "no output from test machine",
    VM_FROZEN: "QEMU not responding",
}
_HOST_TAIL_LINES = 50


@dataclass
class Frame:
    function: str
    offset: int | None = None
    size: int | None = None
    module: str = ""
    file: str = ""
    line: int | None = None
    inline: bool = False


@dataclass
class Stack:
    label: str                 # "Call Trace", "Allocated by task 400", "backtrace", ...
    frames: list[Frame] = field(default_factory=list)


@dataclass
class Finding:
    title: str
    category: str
    frame: str                 # what the title names: a function, or where the driver checked
    report: str                # the report's lines, printk prefixes removed
    frames: list[Frame] = field(default_factory=list)   # crash site first
    stacks: list[Stack] = field(default_factory=list)
    corrupted: bool = False
    corrupted_reason: str = ""
    hint: str = ""             # e.g. KASAN's "null-ptr-deref" note on a GPF
    signature: str = ""        # title plus call path under the frame, hashed
    start_line: int = 0        # 1-based lines of the log; 0 for host findings
    end_line: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class _Line:
    index: int
    ctx: str | None
    text: str


@dataclass
class _Parsed:
    """A report's lines with its stacks located."""
    texts: list[str]
    stacks: list[tuple[Stack, list[Frame], int, int]]   # stack, task frames, first, end
    rip: list[Frame]

    def primary(self, label: str = "Call Trace"):
        return next((s for s in self.stacks if s[0].label.startswith(label)), None)

    def frames(self, label: str = "Call Trace") -> list[Frame]:
        p = self.primary(label)
        return self.rip + (p[0].frames if p else [])

    def task_frames(self) -> list[Frame]:
        p = self.primary()
        return self.rip + (p[1] if p else [])


def _split(console: str) -> list[_Line]:
    out = []
    for i, raw in enumerate(console.splitlines()):
        raw = raw.rstrip("\r")
        m = _PREFIX.search(raw)
        ctx, text = (m.group(1), raw[m.end():]) if m else (None, raw)
        out.append(_Line(i, ctx, _KMEMLEAK_PREFIX.sub("", text)))
    return out


def _frame(text: str) -> tuple[Frame, bool] | None:
    m = _FRAME.match(text)
    if m:
        mod = m.group("mod") or m.group("mod2") or ""
        return Frame(m.group("func"), int(m.group("off"), 16), int(m.group("size"), 16),
                     "" if mod == "inline" else mod, m.group("file") or "",
                     int(m.group("line")) if m.group("line") else None), bool(m.group("q"))
    m = _INLINE.match(text)
    if m:
        return Frame(m.group("func"), file=m.group("file"), line=int(m.group("line")),
                     inline=True), bool(m.group("q"))
    return None


def _parse_stacks(texts: list[str]) -> _Parsed:
    stacks = []
    cur = None
    depth = 0          # inside <IRQ>, <NMI> or <SOFTIRQ>
    for i, t in enumerate(texts):
        start = _STACK_START.match(t)
        if start:
            cur = [Stack(start.group(1)), [], i, i + 1]
            stacks.append(cur)
            depth = 0
            continue
        if cur is None:
            continue
        parsed = _frame(t)
        marker = _MARKER.match(t)
        if parsed:
            frame, questionable = parsed
            if not questionable:
                cur[0].frames.append(frame)
                if depth == 0:
                    cur[1].append(frame)
            cur[3] = i + 1
        elif marker:
            if marker.group(2) in ("IRQ", "NMI", "SOFTIRQ"):
                depth = max(0, depth + (-1 if marker.group(1) else 1))
            cur[3] = i + 1
        elif _REGS.match(t):
            cur[3] = i + 1
        elif t.strip() and any(_frame(x) for x in texts[i + 1:i + 3]):
            pass   # a stray line from elsewhere inside the trace
        else:
            cur = None
    rip = []
    first_stack = stacks[0][2] if stacks else len(texts)
    for i, t in enumerate(texts[:first_stack]):
        m = _RIP.match(t)
        if m and (parsed := _frame(m.group("rest"))):
            rip.append(parsed[0])
        elif rip:
            break
    return _Parsed(texts, [tuple(s) for s in stacks], rip)


def _name(fn: str) -> str:
    return _COMPILER_SUFFIX.sub("", fn.split("+", 1)[0])


def _pick(names, skip: re.Pattern | None = None) -> str:
    for n in names:
        n = _name(n)
        if n and not _GENERIC.search(n) and not (skip and skip.search(n)):
            return n
    return ""


def _names(frames: list[Frame]) -> list[str]:
    return [_name(f.function) for f in frames]


def _stall_frame(frames: list[Frame]) -> str:
    names = _names(frames)
    for n in names:
        if _SVM_ENTRY.match(n):
            return n
    for i, n in enumerate(names):
        if _STALL_ANCHOR.match(n):
            prev = names[i - 1] if i else n
            return re.sub(r"^__(?:x64|ia32)_", "", prev)
    return _pick(names, _STALL_SKIP)


def _hang_frame(frames: list[Frame]) -> str:
    names = _names(frames)
    for n in names:
        if _HANG_ANCHOR.match(n):
            return "synchronize_rcu"
    for n in names:
        if not any(s in n for s in _HANG_SKIP) and not _GENERIC.search(n):
            return n
    return ""


@dataclass
class _Verdict:
    title: str
    category: str
    frame: str = ""
    stack_needed: bool = True      # without a stack the title cannot be trusted
    corrupted: str = ""
    hint: str = ""
    stable_stack: bool = True      # the stack under the frame is the same each time


def _in(base: str, frame: str) -> str:
    return f"{base} in {frame}" if frame else base


def _kasan(m, p: _Parsed) -> _Verdict:
    access = next((a.group(1) for t in p.texts[1:6] if (a := re.match(r"^(Read|Write) of size", t))), "")
    base = f"KASAN: {m.group(1)}" + (f" {access}" if access else "")
    frame = _pick([m.group(2) or ""] + _names(p.frames()))
    return _Verdict(_in(base, frame), "kasan", frame)


def _ubsan(m, p: _Parsed) -> _Verdict:
    frame = _pick(_names(p.frames()))
    return _Verdict(_in(f"UBSAN: {m.group(1)}", frame), "ubsan", frame)


# WARNs raised inside a checker are named after the checker and blamed on its caller.
_WARN_CHECKERS = [
    (re.compile(r"^lib/refcount\.c"), "WARNING: refcount bug", re.compile(r"refcount")),
    (re.compile(r"^kernel/locking/lockdep\.c"), "WARNING: locking bug", None),
    (re.compile(r"^lib/debugobjects\.c"), "WARNING: ODEBUG bug",
     re.compile(r"^debug_|^_*(?:hr)?timer_|^_*(?:cancel_)?work|^kfree|^kmem_cache|^__free_")),
]


def _warning(m, p: _Parsed) -> _Verdict:
    where = m.group(1) or ""
    for path, base, skip in _WARN_CHECKERS:
        if path.match(where):
            frame = _pick(_names(p.frames()), skip)
            return _Verdict(_in(base, frame), "warning", frame)
    frame = _pick([m.group(2)] + _names(p.frames()))
    return _Verdict(_in("WARNING", frame), "warning", frame)


# lockdep header -> (title, the line after which lockdep names the culprit with "at:")
_LOCKDEP = {
    "possible circular locking dependency detected": ("possible deadlock", "is trying to acquire lock"),
    "possible recursive locking detected": ("possible deadlock", "is trying to acquire lock"),
    "possible irq lock inversion dependency detected": ("possible deadlock", "just changed the state of lock"),
    "IRQ-unsafe lock order detected": ("possible deadlock", "is trying to acquire"),
    "inconsistent lock state": ("inconsistent lock state", " takes:"),
    "bad unlock balance detected!": ("WARNING: bad unlock balance", "is trying to release lock"),
    "held lock freed!": ("WARNING: held lock freed", "is freeing memory"),
    "lock held when returning to user space!": ("WARNING: lock held when returning to user space",
                                                "is leaving the kernel with locks still held"),
    "suspicious RCU usage": ("WARNING: suspicious RCU usage", None),
}
_AT = re.compile(r"\bat: (?:\[<[0-9a-f]+>\] )?(" + _FUNC + r")\+0x")


def _lockdep(m, p: _Parsed) -> _Verdict:
    key = next(k for k in _LOCKDEP if m.group(1).endswith(k))
    base, anchor = _LOCKDEP[key]
    culprit = ""
    if anchor:
        at = next((i for i, t in enumerate(p.texts) if anchor in t), None)
        if at is not None:
            culprit = next((a.group(1) for t in p.texts[at + 1:at + 6] if (a := _AT.search(t))), "")
    skip = re.compile(r"rcu") if anchor is None else None
    frame = _pick([culprit] + _names(p.frames()), skip)
    return _Verdict(_in(base, frame), "lockdep", frame)


def _non_static_key(m, p: _Parsed) -> _Verdict:
    frame = _pick(_names(p.frames()), re.compile(r"stack|lock|IRQ|^register_lock_class"))
    return _Verdict(_in("INFO: trying to register non-static key", frame), "lockdep", frame)


def _hung(m, p: _Parsed) -> _Verdict:
    frame = _hang_frame(p.frames())
    return _Verdict(_in("INFO: task hung", frame), "hang", frame, stable_stack=False)


def _rcu_stall(m, p: _Parsed) -> _Verdict:
    frame = _stall_frame(p.task_frames())
    return _Verdict(_in("INFO: rcu detected stall", frame), "stall", frame, stable_stack=False)


def _soft_lockup(m, p: _Parsed) -> _Verdict:
    frame = _stall_frame(p.task_frames())
    return _Verdict(_in("BUG: soft lockup", frame), "lockup", frame, stable_stack=False)


def _crash(base: str, skip: re.Pattern | None = None):
    def make(m, p: _Parsed) -> _Verdict:
        frame = _pick(_names(p.frames()), skip)
        return _Verdict(_in(base, frame), "crash", frame)
    return make


def _gpf(m, p: _Parsed) -> _Verdict:
    v = _crash("general protection fault")(m, p)
    v.hint = next((h.group(1) for t in p.texts[:4] if (h := re.match(r"^KASAN: (.+?) in range", t))), "")
    return v


def _kernel_bug(m, p: _Parsed) -> _Verdict:
    if m.group(1).startswith("lib/list_debug.c"):
        return _crash("BUG: corrupted list", re.compile(r"list"))(m, p)
    return _crash("kernel BUG")(m, p)


def _trap(m, p: _Parsed) -> _Verdict:
    name = {"stack segment": "stack segment fault"}.get(m.group(1), m.group(1))
    return _crash(name)(m, p)


def _bug(base: str, skip: re.Pattern | None = None):
    def make(m, p: _Parsed) -> _Verdict:
        frame = _pick(_names(p.frames()), skip)
        return _Verdict(_in(base, frame), "bug", frame)
    return make


def _bad_state(m, p: _Parsed) -> _Verdict:
    return _Verdict(f"BUG: {m.group(1)}", "bug", stack_needed=False)


def _other_bug(m, p: _Parsed) -> _Verdict:
    what = m.group(1)
    merged = _TIME_IN_TITLE.search(what)
    if merged:
        what = what[:merged.start()]
    # Keep the message, drop what changes between runs (addresses, task, numbers).
    what = re.sub(r"\s*\[[0-9a-fx]+\]", "", what)
    what = re.split(r": | - |, ", what, maxsplit=1)[0]
    what = re.sub(r"\b(?:0x)?[0-9a-f]*\d[0-9a-f]*\b", "NUM", what).strip()
    frame = _pick(_names(p.frames()))
    return _Verdict(_in(f"BUG: {what}", frame), "bug", frame, stack_needed=False,
                    corrupted="header interleaved with another line" if merged else "")


def _leak(m, p: _Parsed) -> _Verdict:
    frame = _pick(_names(p.frames("backtrace")), _LEAK_SKIP)
    return _Verdict(_in("memory leak", frame), "leak", frame)


# A panic with one of these reasons only ever follows another report: on its
# own it means that report's header was lost.
_ORPHAN_PANICS = ("Fatal exception", "panic_on_warn set", "hung_task: blocked tasks",
                  "softlockup: hung tasks", "kasan.fault=panic")


def _panic(m, p: _Parsed) -> _Verdict:
    reason = m.group(1).strip()
    lost = next((r for r in _ORPHAN_PANICS if r in reason), "")
    title = f"kernel panic: {lost or reason}"
    return _Verdict(title, "panic", stack_needed=False,
                    corrupted="panic without the report that caused it" if lost else "")


def _livelock(m, p: _Parsed) -> _Verdict:
    return _Verdict(f"livelock in {m.group(1)}", "livelock", m.group(1), stack_needed=False)


def _unbalanced(m, p: _Parsed) -> _Verdict:
    return _Verdict(f"unbalanced mmu_notifier start/end in {m.group(1)}", "notifier", m.group(1),
                    stack_needed=False)


@dataclass
class _Format:
    header: re.Pattern
    verdict: object
    # How the report ends: at a "====" rule, at "---[ end trace", after its
    # stack ("stack"; "hung" adds the held-locks dump; "maybe" when the stack
    # is optional), at the end of a panic, or on its header "line".
    end: str
    follows: bool = False   # only a report of its own when no report precedes it closely
    # A symbolizer expands the header into one line per inlined frame.
    repeats: bool = False


_FORMATS = [
    _Format(re.compile(r"^svmdev: livelock suspected in ([^\s:]+)"), _livelock, "maybe"),
    _Format(re.compile(r"^svmdev: unbalanced mmu_notifier start/end at ([^:]+):"), _unbalanced, "line"),
    _Format(re.compile(r"BUG: KASAN: ([\w-]+(?: or [\w-]+)?)(?: in (\S+))?"), _kasan, "rule", repeats=True),
    _Format(re.compile(r"UBSAN: ([\w-]+) in (\S+)"), _ubsan, "trace"),
    _Format(re.compile(r"WARNING: ((?:(?:SOFT|HARD)IRQ-safe -> (?:SOFT|HARD))?(?:" +
                       "|".join(re.escape(k) for k in _LOCKDEP) + "))"), _lockdep, "stack"),
    _Format(re.compile(r"WARNING: CPU: \d+ PID: \d+ at (?:(\S+:\d+) )?(\S+)"), _warning, "trace"),
    _Format(re.compile(r"INFO: task \S+:\d+ blocked for more than \d+ seconds"), _hung, "hung"),
    _Format(re.compile(r"INFO: rcu_\w+ (?:self-)?detected(?: expedited)? stall"), _rcu_stall, "stack"),
    _Format(re.compile(r"INFO: trying to register non-static key"), _non_static_key, "stack"),
    _Format(re.compile(r"BUG: soft lockup - CPU#\d+ stuck"), _soft_lockup, "stack"),
    _Format(re.compile(r"BUG: unable to handle (?:page fault for address|kernel paging request)"),
            _crash("BUG: unable to handle kernel paging request"), "trace"),
    _Format(re.compile(r"BUG: (?:unable to handle )?kernel NULL pointer dereference"),
            _crash("BUG: unable to handle kernel NULL pointer dereference"), "trace"),
    _Format(re.compile(r"BUG: sleeping function called from invalid context"),
            _bug("BUG: sleeping function called from invalid context", _SLEEP_SKIP), "stack"),
    _Format(re.compile(r"BUG: scheduling while atomic"),
            _bug("BUG: scheduling while atomic", re.compile(r"sched")), "stack"),
    _Format(re.compile(r"BUG: (Bad page state|Bad page map|Bad rss-counter state|workqueue lockup)"),
            _bad_state, "maybe"),
    _Format(re.compile(r"kernel BUG at (\S+?)!?$"), _kernel_bug, "trace"),
    _Format(re.compile(r"general protection fault"), _gpf, "trace"),
    _Format(re.compile(r"^(?:Oops: )?(invalid opcode|divide error|stack segment): [0-9a-f]{4}\b"),
            _trap, "trace", follows=True),
    _Format(re.compile(r"^unreferenced object 0x[0-9a-f]+ \(size \d+\):"), _leak, "stack"),
    _Format(re.compile(r"Kernel panic - not syncing: ?(.*)"), _panic, "panic", follows=True),
    _Format(re.compile(r"^BUG: (.+)"), _other_bug, "maybe"),
]
# A trap line this close after another header is that report's "Oops:" line.
_FOLLOW_WINDOW = 10


@dataclass
class _Start:
    line: _Line
    fmt: _Format
    match: re.Match


def _starts(lines: list[_Line]) -> list[_Start]:
    out: list[_Start] = []
    header_lines: set[int] = set()
    previous: dict[str | None, int] = {}     # last line seen in each printk context
    for ln in lines:
        before, previous[ln.ctx] = previous.get(ln.ctx), ln.index
        for fmt in _FORMATS:
            m = fmt.header.search(ln.text)
            if not m:
                continue
            if fmt.follows and out and (fmt.verdict is _panic or
                                        ln.index - out[-1].line.index <= _FOLLOW_WINDOW):
                break
            if fmt.repeats and before in header_lines and out[-1].fmt is fmt:
                header_lines.add(ln.index)
                break
            out.append(_Start(ln, fmt, m))
            header_lines.add(ln.index)
            break
    return out


def _collect(lines: list[_Line], start: _Start, start_at: set[int]) -> list[_Line]:
    """The report's lines: its own printk context's, up to the next report in it."""
    ctx = start.line.ctx
    body = []
    for ln in reversed(lines[max(0, start.line.index - 12):start.line.index]):
        if ln.ctx != ctx:
            break
        if _RULE.match(ln.text):
            # Only the rule right above the header opens this report; one
            # further up closes the report before it.
            if not body:
                body.append(ln)
            break
        if not (_PAGE_DUMP.match(ln.text) or _CUT_HERE.match(ln.text)):
            break
        body.insert(0, ln)
    body.append(start.line)
    nmi = False          # other CPUs' backtraces print from their own contexts
    for ln in lines[start.line.index + 1:]:
        if ctx is not None and ln.ctx != ctx and not (nmi and ln.ctx and ln.ctx[0] == "C"):
            continue
        if ln.index in start_at or len(body) >= _MAX_REPORT_LINES:
            break
        nmi = nmi or bool(_NMI_TRACE.search(ln.text))
        body.append(ln)
    return body


def _end(body: list[_Line], fmt: _Format, head: int) -> int | None:
    """Index just past the report's own last line; None when it was cut off."""
    texts = [ln.text for ln in body]
    if fmt.end == "line":
        return head + 1
    if fmt.end in ("rule", "trace", "panic"):
        stop = {"rule": _RULE, "trace": _TRACE_END, "panic": _PANIC_END}[fmt.end]
        return next((i + 1 for i in range(head + 1, len(texts)) if stop.search(texts[i])), None)
    parsed = _parse_stacks(texts)
    label = "backtrace" if fmt.verdict is _leak else "Call Trace"
    primary = parsed.primary(label)
    if fmt.end == "maybe" and (primary is None or primary[2] > head + _OPTIONAL_STACK_REACH):
        return head + 1
    if primary is None:
        return None
    end = primary[3]
    if fmt.end == "hung":
        nxt = next((i for i in range(end, len(texts)) if texts[i].strip()), None)
        if nxt is not None and texts[nxt].startswith("Showing all locks held"):
            end = next((i + 1 for i in range(nxt + 1, len(texts)) if _RULE.match(texts[i])), len(texts))
    return end


def _trim(body: list[_Line], fmt: _Format, head: int) -> list[_Line]:
    end = _end(body, fmt, head)
    if end is None:
        return body
    for i in range(end, min(len(body), end + _PANIC_REACH)):
        if _PANIC.search(body[i].text):
            stop = next((j + 1 for j in range(i, len(body)) if _PANIC_END.search(body[j].text)), len(body))
            return body[:stop]
    return body[:end]


def _signature(v: _Verdict, frames: list[Frame]) -> str:
    h = hashlib.sha256(v.title.encode())
    names = _names(frames)
    if v.stable_stack and v.frame in names:
        at = names.index(v.frame)
        for n in names[at + 1:at + 1 + _SIGNATURE_DEPTH]:
            h.update(b"\0" + n.encode())
    return h.hexdigest()[:16]


def _finding(lines: list[_Line], start: _Start, start_at: set[int]) -> Finding:
    body = _collect(lines, start, start_at)
    head = body.index(start.line)
    body = _trim(body, start.fmt, head)
    texts = [ln.text for ln in body]
    parsed = _parse_stacks(texts)
    v = start.fmt.verdict(start.match, _Parsed(texts[head:], parsed.stacks, parsed.rip))
    frames = parsed.frames("backtrace" if start.fmt.verdict is _leak else "Call Trace")
    corrupted = v.corrupted
    if not corrupted and _TIME_IN_TITLE.search(v.title):
        corrupted = "title interleaved with another line"
    elif not corrupted and v.stack_needed:
        if not frames:
            corrupted = "no stack trace"
        elif not v.frame:
            corrupted = "no frame to name the report after"
    return Finding(title=v.title, category=v.category, frame=v.frame, report="\n".join(texts),
                   frames=frames, stacks=[s[0] for s in parsed.stacks],
                   corrupted=bool(corrupted), corrupted_reason=corrupted, hint=v.hint,
                   signature=_signature(v, frames),
                   start_line=body[0].index + 1, end_line=body[-1].index + 1)


def parse(console: str) -> list[Finding]:
    """Every report in the log, in the order they started; the first is primary."""
    lines = _split(console)
    starts = _starts(lines)
    start_at = {s.line.index for s in starts}
    return [_finding(lines, s, start_at) for s in starts]


def stuck_finding(report: str) -> Finding:
    """A finding for a task that SIGKILL could not end, from its threads'
    kernel stacks (one frame a line, as /proc/<pid>/stack gives them). It
    gets the title the hung-task detector's report of that task would get,
    so both are one bug."""
    frames = [p[0] for t in report.splitlines() if (p := _frame(t)) and not p[1]]
    frame = _hang_frame(frames)
    title = _in("INFO: task hung", frame)
    v = _Verdict(title, "hang", frame)
    return Finding(title=title, category="hang", frame=frame, report=report, frames=frames,
                   stacks=[Stack("stack", frames)], corrupted=not frame,
                   corrupted_reason="" if frame else "no frame to name the task after",
                   signature=_signature(v, frames))


def host_finding(kind: str, console: str = "", detail: str = "") -> Finding:
    """A finding for a VM or executor that stopped answering (EXECUTOR_LOST,
    VM_LOST, NO_OUTPUT). A kernel report in its console explains the loss
    better than the symptom does, so when there is one, that report is it."""
    if kind not in _HOST_TITLES:
        raise ValueError(f"unknown host finding {kind!r}; one of {', '.join(_HOST_TITLES)}")
    found = parse(console)
    if found:
        return found[0]
    title = _HOST_TITLES[kind]
    tail = console.splitlines()[-_HOST_TAIL_LINES:]
    report = "\n".join(([detail] if detail else []) + tail)
    return Finding(title=title, category="lost", frame="", report=report,
                   signature=hashlib.sha256(title.encode()).hexdigest()[:16])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m svmfuzz.oracles.console LOG   (LOG may be - for stdin)", file=sys.stderr)
        return 2
    if argv[0] == "-":
        text = sys.stdin.read()
    else:
        with open(argv[0], encoding="utf-8", errors="replace") as f:
            text = f.read()
    json.dump([f.to_json() for f in parse(text)], sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
