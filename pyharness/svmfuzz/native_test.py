"""The program codec of the runner module (fuzz/program, bound in
fuzz/runner/python.cc): what the harness encodes, decodes, checks and writes
as C in process, and that it is what svmprog gives."""

import random
import subprocess

import pytest

from svmfuzz import native, protocol
from svmfuzz.errors import SvmfuzzError
from svmfuzz.paths import REPO_ROOT
from svmfuzz.runner_test import built_tool

CORPUS = sorted((REPO_ROOT / "corpus" / "programs").glob("*.svmp"))

# Threads, a second driver file, a fork with a body, hex and arguments out of
# table order: what the text form allows beyond one op a line.
PROGRAM = """\
# a comment, gone from the canonical text
mmap buf=0 pages=0x10 kind=anon prot=rw
write buf=0 off=0 pages=16 seed=7
open_dev file=1 dev=1 personality=none
thread_create tid=1
@1 touch buf=0 off=0 pages=4
fork wait=yes {
    mirror pages=8 buf=0 off=0 write=no
}
migrate_to_dev buf=0 off=0 pages=8 file=1
thread_join tid=1
"""
# Print() drops comments, writes decimal, args in table order, two spaces of indent.
CANONICAL = (PROGRAM.split("\n", 1)[1]
             .replace("pages=0x10", "pages=16")
             .replace("    mirror pages=8 buf=0 off=0", "  mirror buf=0 off=0 pages=8"))


@pytest.fixture(scope="module")
def codec():
    try:
        return native.module()
    except SvmfuzzError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def svmprog():
    path = built_tool("SVMFUZZ_SVMPROG", "fuzz/program/svmprog")
    if path is None:
        pytest.skip("no svmprog built (set SVMFUZZ_SVMPROG)")
    return path


def test_a_program_goes_to_bytes_and_back_to_its_canonical_text(codec):
    data = codec.encode_program(PROGRAM)
    # The first record is the first op's: its opcode, then its thread.
    assert data[:2] == bytes([protocol.OP_NAMES.index("mmap"), 0])
    assert codec.decode_program(data) == CANONICAL
    assert codec.encode_program(CANONICAL) == data


def test_every_corpus_program_round_trips(codec):
    assert CORPUS
    for path in CORPUS:
        text = path.read_text()
        data = codec.encode_program(text)
        assert data, path.name
        assert codec.decode_program(data) == codec.format_program(text), path.name


def test_a_malformed_program_is_refused_naming_line_and_column(codec):
    with pytest.raises(ValueError, match=r"^3:1: unknown op 'bogus'$"):
        codec.encode_program("mmap buf=0 pages=1 kind=anon prot=rw\n# fine\nbogus buf=0\n")
    # Parsed but not valid: the place is the bad value's.
    with pytest.raises(ValueError, match=r"^2:12: buffer 3 is not mapped$"):
        codec.encode_program("yield\nmunmap buf=3 off=0 pages=1\n")
    with pytest.raises(ValueError, match=r"^2:1: expected '}' to close the block opened at 1:15$"):
        codec.format_program("fork wait=yes {\n")


GARBAGE = [b"", b"\xff\xff\xfe", bytes(range(256)),
           *(random.Random(n).randbytes(40 + 10 * n) for n in range(30))]


def test_garbage_decodes_to_a_valid_program(codec):
    ops = 0
    for data in GARBAGE:
        text = codec.decode_program(data)
        # Every byte string is a program, and what it prints parses back.
        assert codec.format_program(text) == text
        ops += len(text.splitlines())
    assert codec.decode_program(b"\xff\xff\xfe") == ""
    assert ops > 100


def test_garbage_decodes_as_svmprog_decodes_it(codec, svmprog, tmp_path):
    for n, data in enumerate(GARBAGE):
        path = tmp_path / f"input-{n}"
        path.write_bytes(data)
        done = subprocess.run([str(svmprog), "decode", str(path)], capture_output=True,
                              check=True)
        assert codec.decode_program(data).encode() == done.stdout, data.hex()


def test_format_is_canonical_and_parses_back(codec):
    formatted = codec.format_program(PROGRAM)
    assert formatted == CANONICAL
    assert codec.format_program(formatted) == formatted
    assert codec.encode_program(formatted) == codec.encode_program(PROGRAM)


def test_c_source_is_what_svmprog_prog2c_writes(codec, svmprog):
    smoke = REPO_ROOT / "corpus" / "programs" / "boot_smoke.svmp"
    data = codec.encode_program(smoke.read_text())
    knobs = protocol.Knobs(break_imbalance=1)
    source = codec.c_source(data, "svmdev", knobs.values(), 0, 7000)
    done = subprocess.run([str(svmprog), "prog2c", "--knob", "break_imbalance=1", "--repeat", "0",
                           "--timeout-ms", "7000", str(smoke)],
                          capture_output=True, text=True, check=True)
    assert source == done.stdout
    assert "/* 0: mmap buf=0 pages=64 kind=anon prot=rw */" in source
    assert "#define PROGRAM_TIMEOUT_MS 7000" in source
    plain = codec.c_source(data)
    assert "#define DEFAULT_RUNS 1L" in plain and "#define HAVE_KNOBS 0" in plain


def test_c_source_says_why_it_cannot(codec):
    smoke = REPO_ROOT / "corpus" / "programs" / "boot_smoke.svmp"
    data = codec.encode_program(smoke.read_text())
    with pytest.raises(ValueError, match=r"op 8 \(dev_atomic .*\): test_hmm cannot express it"):
        codec.c_source(data, "test_hmm")
    with pytest.raises(ValueError, match="test_hmm has no driver knobs"):
        codec.c_source(codec.encode_program("yield\n"), "test_hmm", [0])
    with pytest.raises(ValueError, match="svmdev or test_hmm, not 'cuda'"):
        codec.c_source(data, "cuda")
    too_many = [0] * (len(codec.KNOB_NAMES) + 1)
    with pytest.raises(ValueError, match="struct svmdev_knobs has"):
        codec.c_source(data, "svmdev", too_many)
