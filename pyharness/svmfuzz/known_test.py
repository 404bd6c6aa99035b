import pytest

from svmfuzz import known


def test_the_shipped_list_parses_and_every_entry_has_a_reason():
    entries = known.load()
    assert entries, "corpus/known-outcomes lists no outcome"
    assert all(k.reason for k in entries)


def test_match_is_whole_title_with_wildcards():
    entries = known.parse("# comment\n\n"
                          "device-exclusive refused in * | THP tail pages\n"
                          "INFO: task hung in svmdev_fence | never\n")
    assert known.match("device-exclusive refused in svmdev_exclusive", entries).reason == \
        "THP tail pages"
    assert known.match("INFO: task hung in svmdev_fence_wait", entries) is None
    assert known.match("livelock in svmdev_exclusive", entries) is None
    assert entries[1].line == 4


@pytest.mark.parametrize("text", ["a title without a reason\n", "| a reason without a title\n",
                                  "title |   \n"])
def test_an_entry_without_title_or_reason_names_its_line(text):
    with pytest.raises(known.KnownError, match=r"list:1: want"):
        known.parse(text, "list")


def test_a_missing_list_is_a_clear_error(tmp_path):
    with pytest.raises(known.KnownError, match="missing"):
        known.load(tmp_path / "missing")
