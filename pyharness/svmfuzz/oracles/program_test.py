from svmfuzz import devctl
from svmfuzz import protocol as p
from svmfuzz.oracles import console
from svmfuzz.oracles.program import judge

F = p.OpFlag
DONE = F.STARTED | F.DONE


def result(**kw) -> p.ExecResult:
    """mmap, write, mirror, dev_read; the driver's counters balanced."""
    counters = [0] * (p.BALANCED + 1)
    counters[p.MN_STARTS] = counters[p.MN_ENDS] = 3
    counters[p.BALANCED] = 1
    ops = [p.OpResult(code, 0, DONE, 0, 0, 1) for code in (0, 10, 12, 16)]
    return p.ExecResult(1, p.Status.OK, ops=ops, **{"counters": counters, **kw})


def deltas(**rose) -> list[int]:
    out = [0] * len(p.Drv)
    for name, n in rose.items():
        out[p.Drv[name.upper()]] = n
    return out


LIVELOCK_LINE = ("[   40.1][ T100] svmdev: livelock suspected in svmdev_range_fault: 10000 iterations "
                 "without progress (pid 100 svmfuzz-executo)\n")


def test_a_clean_run_has_no_findings():
    assert judge(result(), "[    1.0][ T1] svmdev 0000:00:03.0: svmdev interface 1.0\n") == []


def test_retries_rising_past_a_deadline_are_a_livelock_named_after_the_loop():
    r = result(watchdog_deltas=deltas(read_retry=1197, hmm_busy=3))
    r.status, r.detail = p.Status.HUNG, 2
    (f,) = judge(r, "")
    assert f.title == "livelock in svmdev_range_fault" and f.category == "livelock"
    assert "op 2 (mirror) passed its deadline" in f.report and "read_retry +1197" in f.report
    r.watchdog_deltas = deltas(excl_retry=5)
    assert [f.title for f in judge(r, "")] == ["livelock in svmdev_exclusive"]


def test_an_exclusive_loop_refused_thp_tail_pages_is_its_known_outcome_not_a_livelock():
    from svmfuzz import known

    r = result(watchdog_deltas=deltas(excl_retry=40, excl_thp=40))
    r.status, r.detail = p.Status.HUNG, 3
    (f,) = judge(r, "")
    assert f.title == "device-exclusive refused for THP tail pages in svmdev_exclusive"
    assert "exclusive_thp +40" in f.report
    assert known.match(f.title, known.load()) is not None
    # Tail pages in another loop's window do not excuse it.
    r.watchdog_deltas = deltas(read_retry=40, excl_thp=40)
    assert [f.title for f in judge(r, "")] == ["livelock in svmdev_range_fault"]


def test_a_deadline_without_rising_retries_is_no_livelock():
    r = result(watchdog_deltas=deltas(faults=2, vram_free=0))
    r.status, r.detail = p.Status.HUNG, 3
    assert judge(r, "") == []


def test_the_driver_and_the_watchdog_seeing_one_livelock_give_one_finding():
    r = result(watchdog_deltas=deltas(read_retry=10))
    r.status, r.detail = p.Status.HUNG, 2
    (f,) = judge(r, LIVELOCK_LINE)
    assert f.title == "livelock in svmdev_range_fault"
    assert f.report.startswith("svmdev: livelock suspected")  # the driver's report explains more


def test_an_outstanding_start_after_the_balance_check_is_unbalanced():
    r = result()
    r.counters[p.MN_STARTS] = 4
    r.counters[p.BALANCED] = 0
    (f,) = judge(r, "")
    assert f.title == "unbalanced mmu_notifier start/end in check" and f.category == "notifier"
    assert "starts 4 ends 3" in f.report
    line = ("[   9.9][ T100] svmdev: unbalanced mmu_notifier start/end at check: mm 0000000012 "
            "ctx 0 starts 4 ends 3 outstanding 1\n")
    assert [f.title for f in judge(r, line)] == ["unbalanced mmu_notifier start/end in check"]
    assert judge(result(counters=[]), "") == []  # the program never used the driver


def test_shadow_mismatches_are_data_corruption_in_the_op_that_saw_them():
    r = result(mismatches=[p.Mismatch(3, 0, 0, 0, 0x32, 0x38), p.Mismatch(3, 0, 0, 1, 0x2e, 0xb6),
                           p.Mismatch(p.END_OF_PROCESS, 1, 7, 2, 0, 0xff)])
    first, at_exit = judge(r, "")
    assert first.title == "data corruption in dev_read" and first.category == "corruption"
    assert first.report.count("\n") == 1 and "expected 0x32 found 0x38" in first.report
    assert at_exit.title == "data corruption at exit" and "end of process" in at_exit.report


def test_a_kernel_report_comes_first_and_repeats_once():
    hung = ("[   20.0][   T30] INFO: task kworker/u8:1:32 blocked for more than {} seconds.\n"
            "[   20.0][   T30] Call Trace:\n"
            "[   20.0][   T30]  <TASK>\n"
            "[   20.0][   T30]  __schedule+0x10/0x20\n"
            "[   20.0][   T30]  msleep+0x10/0x20\n"
            "[   20.0][   T30]  svmdev_fault_work+0x10/0x20 [svmdev]\n"
            "[   20.0][   T30]  </TASK>\n")
    r = result(mismatches=[p.Mismatch(3, 0, 0, 0, 1, 2)])
    titles = [f.title for f in judge(r, hung.format(3) + hung.format(6))]
    assert titles == ["INFO: task hung in msleep", "data corruption in dev_read"]


def test_a_lost_guest_is_named_by_its_console_or_by_how_it_was_lost():
    (f,) = judge(None, "svmfuzz-init: executor exited with status 137\n", console.EXECUTOR_LOST,
                 "QEMU exited (0)")
    assert f.title == "executor lost" and f.category == "lost" and "status 137" in f.report
    (f,) = judge(None, "", console.VM_LOST, "QEMU exited (-9)")
    assert f.title == "lost connection to test machine"
    (f,) = judge(None, "", console.NO_OUTPUT, "no result within 55 s")
    assert f.title == "no output from test machine"
    (f,) = judge(None, "[  5.0][ T1] Kernel panic - not syncing: stack-protector\n", console.VM_LOST)
    assert f.title.startswith("kernel panic")


def event(kind: devctl.Evt, va: int = 0x100000001008, ctx: int = 3) -> devctl.Event:
    return devctl.Event(stamp=1, va=va, arg=0x7f000, kind=int(kind), code=0, ctx=ctx,
                        access=int(devctl.Kind.READ), reason=0, tag=0)


def test_a_stale_device_access_is_a_finding_named_after_its_context_and_page():
    events = [event(devctl.Evt.ACCESS_DONE), event(devctl.Evt.STALE),
              event(devctl.Evt.STALE, va=0x100000002000)]
    (f,) = judge(result(), "", device_events=events)
    assert f.title == "device stale access in ctx 3 at 0x100000001000"
    assert f.category == "stale" and f.frame == "ctx 3 at 0x100000001000"
    assert "ctx 3 va 0x100000001008: a read through a translation to 0x7f000" in f.report
    assert len(f.report.splitlines()) == 2


def test_device_events_without_a_stale_access_are_no_finding():
    assert judge(result(), "", device_events=[event(devctl.Evt.ACCESS_DONE)]) == []


def test_a_kernel_report_comes_before_a_stale_access():
    window = "[   10.0][ T100] WARNING: CPU: 0 PID: 100 at mm/hmm.c:1 hmm_range_fault+0x1/0x2\n"
    titles = [f.title for f in judge(result(), window, device_events=[event(devctl.Evt.STALE)])]
    assert titles[-1] == "device stale access in ctx 3 at 0x100000001000"
    assert len(titles) == 2


STUCK_STACKS = """task 131 (svmfuzz-executo) state D:
 svmdev_wait+0x1f6/0x2d0 [svmdev]
 svmdev_fence+0x2c1/0x3a0 [svmdev]
 svmdev_pt_unmap+0x19d/0x260 [svmdev]
 svmdev_invalidate+0x2f4/0x4c0 [svmdev]
 __mmu_notifier_invalidate_range_start+0x2b7/0x6f0
 unmap_vmas+0x3c9/0x420
 vms_clear_ptes+0x2b4/0x3c0
 do_vmi_align_munmap+0x39d/0x5e0
 __vm_munmap+0x1a6/0x330
 __x64_sys_munmap+0x59/0x80
 do_syscall_64+0x6c/0x140
 entry_SYSCALL_64_after_hwframe+0x76/0x7e
task 132 (svmfuzz-executo) state S:
 futex_wait_queue+0xe1/0x1a0
"""


def stuck(state: int, stacks: str) -> p.ExecResult:
    r = result(message=stacks)
    r.status, r.detail = p.Status.STUCK, state
    return r


def test_a_task_sigkill_cannot_end_is_a_hung_task_named_after_where_it_sleeps():
    r = stuck(ord("D"), STUCK_STACKS)
    (f,) = judge(r, "")
    # The title the hung-task detector's report of the same task gets.
    assert f.title == "INFO: task hung in svmdev_fence" and f.category == "hang"
    assert f.frames[0].function == "svmdev_wait" and f.frames[0].module == "svmdev"
    assert f.report.startswith("stuck in state D after SIGKILL\ntask 131")
    assert not f.corrupted


def test_the_stuck_task_and_the_kernels_hung_task_report_are_one_finding():
    report = ("[   45.0][  T30] INFO: task svmfuzz-executo:131 blocked for more than 30 seconds.\n"
              "[   45.0][  T30]       Not tainted 6.12.57 #1\n"
              "[   45.0][  T30] task:svmfuzz-executo state:D stack:0 pid:131\n"
              "[   45.0][  T30] Call Trace:\n"
              "[   45.0][  T30]  <TASK>\n"
              "[   45.0][  T30]  __schedule+0x8f1/0x1c40\n"
              "[   45.0][  T30]  schedule+0x6e/0x1a0\n"
              "[   45.0][  T30]  schedule_timeout+0x10f/0x200\n"
              "[   45.0][  T30]  wait_for_completion_timeout+0x160/0x2a0\n"
              "[   45.0][  T30]  svmdev_wait+0x1f6/0x2d0 [svmdev]\n"
              "[   45.0][  T30]  svmdev_fence+0x2c1/0x3a0 [svmdev]\n"
              "[   45.0][  T30]  svmdev_pt_unmap+0x19d/0x260 [svmdev]\n"
              "[   45.0][  T30]  </TASK>\n")
    r = stuck(ord("D"), STUCK_STACKS)
    assert [f.title for f in judge(r, report)] == ["INFO: task hung in svmdev_fence"]


def test_a_stuck_task_without_a_stack_is_still_a_finding():
    r = stuck(ord("R"), "")
    (f,) = judge(r, "")
    assert f.title == "INFO: task hung" and f.corrupted
