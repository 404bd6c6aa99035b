import os
import subprocess

import pytest

from svmfuzz.artifacts import cache


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SVMFUZZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_changes_with_any_input(tmp_path):
    f = tmp_path / "a"
    f.write_text("one")
    k1 = cache.Hasher().text("x", "1").file("f", f).key()
    assert k1 == cache.Hasher().text("x", "1").file("f", f).key()
    f.write_text("two")
    k2 = cache.Hasher().text("x", "1").file("f", f).key()
    assert k2 != k1
    assert cache.Hasher().text("x", "2").file("f", f).key() != k2
    # name and value cannot slide into each other
    assert cache.Hasher().text("ab", "c").key() != cache.Hasher().text("a", "bc").key()


def test_publish_builds_once_then_reuses():
    calls = []

    def fill(out):
        calls.append(out)
        (out / "thing").write_text("built")
        return {"note": 1}

    logs = []
    first = cache.publish("demo", "k1", fill, logs.append)
    second = cache.publish("demo", "k1", fill, logs.append)
    assert first == second and (first / "thing").read_text() == "built"
    assert len(calls) == 1
    assert "reusing" in logs[-1]


def test_failed_build_leaves_nothing_behind():
    def fill(out):
        (out / "half").write_text("x")
        raise RuntimeError("compiler died")

    with pytest.raises(RuntimeError):
        cache.publish("demo", "k2", fill, lambda m: None)
    assert cache.lookup("demo", "k2") is None
    assert not list(cache.out_dir("demo", "k2").parent.iterdir())


def test_unstamped_leftover_is_rebuilt():
    # What a kill between mkdir and the stamp could leave: not a valid artifact.
    d = cache.out_dir("demo", "k3")
    d.mkdir(parents=True)
    (d / "partial").write_text("x")
    out = cache.publish("demo", "k3", lambda o: (o / "ok").write_text("y") and {}, lambda m: None)
    assert (out / "ok").is_file() and not (out / "partial").exists()


def test_link_artifact_points_at_cache(tmp_path):
    target = cache.publish("demo", "k4", lambda o: {}, lambda m: None)
    cache.link_artifact("demo", target, tmp_path / "build")
    assert cache.linked_artifact("demo", tmp_path / "build") == target
    assert cache.linked_artifact("absent", tmp_path / "build") is None


def test_tree_fingerprint_sees_edits(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.c").write_text("int a;")
    before = cache.tree_fingerprint(tree)
    assert before == cache.tree_fingerprint(tree)
    (tree / "a.c").write_text("int a = 1;")
    assert cache.tree_fingerprint(tree) != before


def test_tree_fingerprint_of_git_tree_sees_uncommitted_changes(tmp_path):
    tree = tmp_path / "repo"
    tree.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (tree / "f").write_text("1")
    for argv in (["init", "-q"], ["add", "f"], ["commit", "-qm", "c"]):
        subprocess.run(["git", "-C", str(tree), *argv], check=True, env=env)
    clean = cache.tree_fingerprint(tree)
    (tree / "f").write_text("2")
    assert cache.tree_fingerprint(tree) != clean


def test_failed_command_shows_its_output(tmp_path):
    from svmfuzz.errors import SvmfuzzError

    with pytest.raises(SvmfuzzError, match="no such thing"):
        cache.run(["sh", "-c", "echo no such thing; exit 3"], tmp_path / "log")
