"""The QEMU source changes that wire_device makes, on a stand-in tree."""

import pytest

from svmfuzz.artifacts import qemu
from svmfuzz.errors import SvmfuzzError

TIMERS_C = """static const VMStateDescription vmstate_timers = {
    .name = "timer",
    .version_id = 2,
    .minimum_version_id = 1,
};
"""


def test_timers_get_a_post_load_once(tmp_path):
    path = tmp_path / "system" / "cpu-timers.c"
    path.parent.mkdir()
    path.write_text(TIMERS_C)
    qemu.restore_tsc_on_load(tmp_path)
    once = path.read_text()
    assert once.count(f".post_load = {qemu.TIMERS_MARK},") == 1
    assert once.index(f"static int {qemu.TIMERS_MARK}(") < once.index("vmstate_timers = {")
    assert "s->cpu_ticks_prev = 0;" in once
    qemu.restore_tsc_on_load(tmp_path)
    assert path.read_text() == once


def test_an_unknown_qemu_is_a_clear_error(tmp_path):
    with pytest.raises(SvmfuzzError, match="cpu-timers.c"):
        qemu.restore_tsc_on_load(tmp_path)
    path = tmp_path / "softmmu" / "cpu-timers.c"
    path.parent.mkdir()
    path.write_text("static const VMStateDescription vmstate_cpu = {};\n")
    with pytest.raises(SvmfuzzError, match="'timer' VMStateDescription"):
        qemu.restore_tsc_on_load(tmp_path)
    assert path.read_text() == "static const VMStateDescription vmstate_cpu = {};\n"
