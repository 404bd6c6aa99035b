import json
import re
from pathlib import Path

import pytest

from svmfuzz.oracles import console

DATA = Path(__file__).parent / "testdata"


def read(name: str) -> str:
    return (DATA / name).read_text()


def strip_prefixes(log: str) -> str:
    return re.sub(r"(?m)^\[\s*\d+\.\d+\]\[\s*[CT]\d+\] ", "", log)


# file -> (title, category, frame) of each finding, in order
EXPECTED = {
    "kasan_uaf.log": [("KASAN: slab-use-after-free Read in hmm_range_fault", "kasan", "hmm_range_fault")],
    "warning.log": [("WARNING in migrate_vma_setup", "warning", "migrate_vma_setup")],
    "warning_panic.log": [("WARNING in __mmu_notifier_invalidate_range_start", "warning",
                           "__mmu_notifier_invalidate_range_start")],
    "lockdep_circular.log": [("possible deadlock in svmdev_invalidate", "lockdep", "svmdev_invalidate")],
    "hung_task.log": [("INFO: task hung in mmu_interval_read_begin", "hang", "mmu_interval_read_begin")],
    "soft_lockup.log": [("BUG: soft lockup in hmm_range_fault", "lockup", "hmm_range_fault")],
    "rcu_stall.log": [("INFO: rcu detected stall in svmdev_fault_work", "stall", "svmdev_fault_work")],
    "gpf_null.log": [("general protection fault in svmdev_migrate_to_ram", "crash", "svmdev_migrate_to_ram")],
    "kernel_bug.log": [("kernel BUG in migrate_device_finalize", "crash", "migrate_device_finalize")],
    "page_fault.log": [("BUG: unable to handle kernel paging request in svmdev_copy_to_vram", "crash",
                        "svmdev_copy_to_vram")],
    "sleeping.log": [("BUG: sleeping function called from invalid context in svmdev_invalidate", "bug",
                      "svmdev_invalidate")],
    "ubsan.log": [("UBSAN: shift-out-of-bounds in svmdev_pt_walk", "ubsan", "svmdev_pt_walk")],
    "kmemleak.log": [("memory leak in svmdev_range_get", "leak", "svmdev_range_get"),
                     ("memory leak in svmdev_pt_alloc", "leak", "svmdev_pt_alloc")],
    "svmdev_livelock.log": [("livelock in svmdev_range_fault", "livelock", "svmdev_range_fault")],
    "svmdev_unbalanced.log": [("unbalanced mmu_notifier start/end in mm release", "notifier", "mm release")],
    "clean_boot.log": [],
}


def test_every_testdata_file_has_an_expectation():
    assert sorted(p.name for p in DATA.glob("*.log")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_titles(name):
    found = console.parse(read(name))
    assert [(f.title, f.category, f.frame) for f in found] == EXPECTED[name]
    assert not any(f.corrupted for f in found), [f.corrupted_reason for f in found]


def test_kasan_keeps_its_stacks_and_drops_other_tasks_lines():
    f = console.parse(read("kasan_uaf.log"))[0]
    assert [s.label for s in f.stacks] == ["Call Trace", "Allocated by task 412", "Freed by task 414"]
    freed = [fr.function for fr in f.stacks[2].frames]
    assert "svmdev_mirror_destroy" in freed and "kfree" in freed
    # lines printed meanwhile by task 415 and from CPU 0's interrupt are not part of it
    assert "ctx 4 bound" not in f.report and "hrtimer" not in f.report
    assert "walk_page_range" not in f.report
    names = [fr.function for fr in f.frames]
    assert names.index("hmm_range_fault") + 1 == names.index("svmdev_range_fault")
    assert f.frames[names.index("svmdev_range_fault")].module == "svmdev"
    assert f.frames[names.index("hmm_range_fault")].offset == 0x2f1
    # the report runs from the opening rule to the closing one
    lines = f.report.splitlines()
    assert lines[0].startswith("=====") and lines[1].startswith("BUG: KASAN:")
    assert lines[-1].startswith("=====") and "Disabling lock debugging" not in f.report


def test_warning_frames_start_at_the_faulting_rip():
    f = console.parse(read("warning.log"))[0]
    assert f.frames[0].function == "migrate_vma_setup"
    assert f.frames[1].function == "svmdev_migrate_to_dev"     # "? " frames are skipped
    assert f.report.splitlines()[0] == "------------[ cut here ]------------"
    assert f.report.splitlines()[-1] == "---[ end trace 0000000000000000 ]---"
    assert "migrate failed" not in f.report


def test_panic_after_a_warning_is_part_of_it():
    found = console.parse(read("warning_panic.log"))
    assert len(found) == 1
    f = found[0]
    assert "Kernel panic - not syncing: kernel: panic_on_warn set" in f.report
    assert f.report.splitlines()[-1] == "Kernel Offset: disabled"
    # frames come from the warning's own trace, not from the panic's
    assert [fr.function for fr in f.frames][:3] == [
        "__mmu_notifier_invalidate_range_start", "__oom_reap_task_mm", "oom_reaper"]
    assert "panic" not in [fr.function for fr in f.frames]


def test_gpf_carries_kasan_hint_and_its_fatal_exception():
    found = console.parse(read("gpf_null.log"))
    assert len(found) == 1
    assert found[0].hint == "null-ptr-deref"
    assert "Kernel panic - not syncing: Fatal exception" in found[0].report


def test_kernel_bug_includes_page_dump_and_its_oops_line():
    log = read("kernel_bug.log")
    found = console.parse(log)
    assert len(found) == 1     # neither "Oops: invalid opcode" nor the panic starts a report
    f = found[0]
    assert f.start_line == 1 and f.report.startswith("page: refcount:3")
    assert "VM_BUG_ON_FOLIO(!folio_test_locked(folio))" in f.report


def test_hung_task_report_keeps_the_held_locks():
    f = console.parse(read("hung_task.log"))[0]
    assert "1 lock held by svmfuzz-executo/521:" in f.report
    assert f.report.splitlines()[-1].startswith("=====")
    assert "watchdog fired" not in f.report


def test_lockdep_frames_are_the_backtrace_not_the_dependency_chain():
    f = console.parse(read("lockdep_circular.log"))[0]
    names = [fr.function for fr in f.frames]
    assert names[0] == "dump_stack_lvl" and "fs_reclaim_acquire" not in names


def test_kmemleak_with_and_without_printk_prefix():
    first, second = console.parse(read("kmemleak.log"))
    assert "1 new suspected memory leaks" not in first.report
    assert first.report.startswith("unreferenced object 0xffff88800c7b1e00 (size 96):")
    assert second.stacks[0].label == "backtrace (crc 0)"
    assert [fr.function for fr in second.frames][:2] == ["__kmalloc_noprof", "svmdev_pt_alloc"]


def test_oom_dump_before_unbalanced_notifier_is_no_report():
    (f,) = console.parse(read("svmdev_unbalanced.log"))
    assert f.report.startswith("svmdev: unbalanced mmu_notifier start/end at mm release")
    assert f.frames == [] and not f.corrupted


def test_stalls_are_named_by_the_svm_call_or_the_dispatched_work():
    lockup = console.parse(read("soft_lockup.log"))[0]
    assert lockup.frames[0].function == "do_swap_page"        # where it was caught spinning
    assert lockup.frame == "hmm_range_fault"
    stall = console.parse(read("rcu_stall.log"))[0]
    assert stall.frames[0].function == "svmdev_wait_atomic"   # the NMI backtrace of CPU 1
    assert "nmi_cpu_backtrace" not in [fr.function for fr in stall.frames]


def test_multiple_reports_first_is_primary():
    log = read("warning.log") + read("kasan_uaf.log")
    found = console.parse(log)
    assert [f.title for f in found] == ["WARNING in migrate_vma_setup",
                                        "KASAN: slab-use-after-free Read in hmm_range_fault"]
    assert "KASAN" not in found[0].report and "WARNING" not in found[1].report
    assert found[1].start_line > found[0].end_line


def test_truncated_report_keeps_title_and_is_corrupted_without_stack():
    log = read("kasan_uaf.log")
    cut = log[:log.index(" dump_stack_lvl")]
    (f,) = console.parse(cut)
    assert f.title == "KASAN: slab-use-after-free Read in hmm_range_fault"
    assert f.corrupted and f.corrupted_reason == "no stack trace"

    cut = log[:log.index(" svmdev_mirror_fault")]
    (f,) = console.parse(cut)
    assert f.title == "KASAN: slab-use-after-free Read in hmm_range_fault" and not f.corrupted
    assert f.frames[-1].function == "svmdev_range_fault"


def test_truncated_warning_without_stack_is_corrupted():
    log = read("warning.log")
    (f,) = console.parse(log[:log.index("Modules linked in")])
    assert f.title == "WARNING in migrate_vma_setup" and f.corrupted


def test_two_tasks_interleaved_line_by_line():
    a = read("warning.log").splitlines()
    b = read("ubsan.log").splitlines()
    mixed = [x for pair in zip(a, b) for x in pair] + a[len(b):] + b[len(a):]
    warn, ubsan = console.parse("\n".join(mixed))
    assert warn.title == "WARNING in migrate_vma_setup"
    assert ubsan.title == "UBSAN: shift-out-of-bounds in svmdev_pt_walk"
    assert "svmdev_pt_walk" not in warn.report and "migrate_vma_setup" not in ubsan.report
    assert not warn.corrupted and not ubsan.corrupted


def test_without_caller_ids_a_stray_line_inside_the_trace_is_skipped():
    log = strip_prefixes(read("warning.log"))
    log = log.replace(" svmdev_ioc_range+", "svmdev 0000:00:04.0: ctx 2 bound to pid 440\n svmdev_ioc_range+", 1)
    (f,) = console.parse(log)
    assert f.title == "WARNING in migrate_vma_setup"
    assert [fr.function for fr in f.frames][-2:] == ["do_syscall_64", "entry_SYSCALL_64_after_hwframe"]


def test_output_glued_before_the_printk_prefix():
    log = read("warning.log").replace("[", "el.service \x1b[0m.[", 2)
    assert console.parse(log)[0].title == "WARNING in migrate_vma_setup"


def test_symbolized_report_skips_instrumentation_frames():
    log = "\n".join([
        "==================================================================",
        "BUG: KASAN: slab-use-after-free in instrument_atomic_read include/linux/instrumented.h:68 [inline]",
        "BUG: KASAN: slab-use-after-free in mmu_interval_check_retry include/linux/mmu_notifier.h:331 [inline]",
        "BUG: KASAN: slab-use-after-free in hmm_range_fault+0x2f1/0x3a0 mm/hmm.c:612",
        "Write of size 4 at addr ffff88800b6f4c28 by task svmfuzz-executo/412",
        "",
        "Call Trace:",
        " <TASK>",
        " __dump_stack lib/dump_stack.c:94 [inline]",
        " dump_stack_lvl+0x7d/0xa0 lib/dump_stack.c:120",
        " kasan_report+0xb5/0xe0 mm/kasan/report.c:601",
        " instrument_atomic_read include/linux/instrumented.h:68 [inline]",
        " mmu_interval_check_retry include/linux/mmu_notifier.h:331 [inline]",
        " hmm_range_fault+0x2f1/0x3a0 mm/hmm.c:612",
        " svmdev_range_fault+0x24a/0x3a0 [svmdev]",
        " </TASK>",
        "==================================================================",
    ])
    (f,) = console.parse(log)
    assert f.title == "KASAN: slab-use-after-free Write in mmu_interval_check_retry"
    inline = next(fr for fr in f.frames if fr.function == "mmu_interval_check_retry")
    assert inline.inline and inline.file == "include/linux/mmu_notifier.h" and inline.line == 331
    hmm = next(fr for fr in f.frames if fr.function == "hmm_range_fault")
    assert (hmm.file, hmm.line, hmm.inline) == ("mm/hmm.c", 612, False)


def test_panic_on_its_own():
    (f,) = console.parse("[   3.1][    T1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n")
    assert f.title == "kernel panic: Attempted to kill init! exitcode=0x00000100" and not f.corrupted
    (f,) = console.parse("[   3.1][    T1] Kernel panic - not syncing: Fatal exception\n")
    assert f.title == "kernel panic: Fatal exception" and f.corrupted


def test_unknown_bug_keeps_its_message_without_run_specific_parts():
    log = "\n".join([
        "[   5.0][  T412] BUG: using smp_processor_id() in preemptible [00000000] code: svmfuzz-executo/412",
        "[   5.0][  T412] caller is svmdev_fault_reply+0x31/0x310 [svmdev]",
        "[   5.0][  T412] Call Trace:",
        "[   5.0][  T412]  <TASK>",
        "[   5.0][  T412]  dump_stack_lvl+0x7d/0xa0",
        "[   5.0][  T412]  check_preemption_disabled+0xd2/0xe0",
        "[   5.0][  T412]  svmdev_fault_reply+0x31/0x310 [svmdev]",
        "[   5.0][  T412]  </TASK>",
    ])
    (f,) = console.parse(log)
    assert f.title == "BUG: using smp_processor_id() in preemptible code in svmdev_fault_reply"
    (f,) = console.parse("[   5.0][  T412] BUG: Bad pa[   5.1][  T413] svmdev 0000:00:04.0: ctx 1\n")
    assert f.title == "BUG: Bad pa" and f.corrupted


def test_signature_ignores_what_changes_between_runs_but_not_the_call_path():
    log = read("warning.log")
    base = console.parse(log)[0]
    rerun = re.sub(r"\[\s*(\d+)\.", lambda m: f"[{int(m.group(1)) + 100:5d}.", log)
    rerun = rerun.replace("svmdev_migrate_to_dev+0x3b1/", "svmdev_migrate_to_dev+0x3c9/")
    rerun = rerun.replace("PID: 433", "PID: 977")
    assert console.parse(rerun)[0].signature == base.signature
    other_path = log.replace("svmdev_migrate_to_dev", "svmdev_migrate_to_sys")
    other = console.parse(other_path)[0]
    assert other.title == base.title and other.signature != base.signature


def test_stall_signature_does_not_depend_on_where_it_was_caught():
    log = read("soft_lockup.log")
    elsewhere = log.replace("do_swap_page", "filemap_map_pages").replace("walk_pgd_range", "walk_p4d_range")
    a, b = console.parse(log)[0], console.parse(elsewhere)[0]
    assert a.title == b.title and a.signature == b.signature


def test_host_findings():
    assert console.host_finding(console.VM_LOST).title == "lost connection to test machine"
    assert console.host_finding(console.NO_OUTPUT).title == "no output from test machine"
    clean = read("clean_boot.log")
    f = console.host_finding(console.EXECUTOR_LOST, clean, detail="no reply for 60 s")
    assert (f.title, f.category) == ("executor lost", "lost")
    assert f.report.splitlines()[0] == "no reply for 60 s"
    assert f.report.endswith("svmfuzz-executor: ready on /dev/vport1p1")
    # a kernel report in the console is the better explanation
    f = console.host_finding(console.NO_OUTPUT, clean + read("hung_task.log"))
    assert f.title == "INFO: task hung in mmu_interval_read_begin"
    with pytest.raises(ValueError, match="unknown host finding"):
        console.host_finding("vm-exploded")


def test_cli_prints_findings_as_json(capsys):
    assert console.main([str(DATA / "svmdev_livelock.log")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["title"] for f in out] == ["livelock in svmdev_range_fault"]
    assert out[0]["frames"][0]["function"] == "dump_stack_lvl"
    assert console.main([]) == 2
