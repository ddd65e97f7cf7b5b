"""FileCache: one computation per unchanged file, a new one when the file changes."""

import os

from forgetting_jax.utils.file_cache import FileCache, file_stamp


def test_file_cache_recomputes_only_when_the_file_changes(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("a")
    calls = []
    cache = FileCache(size=2)

    def compute():
        calls.append(path.read_text())
        return len(calls)

    assert cache.get("k", str(path), compute) == 1
    assert cache.get("k", str(path), compute) == 1  # unchanged: not recomputed
    path.write_text("bb")
    os.utime(path, ns=(1, 1))
    assert cache.get("k", str(path), compute) == 2  # rewritten: recomputed
    assert cache.get("other", str(path), compute) == 3  # another key
    assert cache.get("k", str(path), compute) == 2
    assert calls == ["a", "bb", "bb"]


def test_file_cache_keeps_at_most_size_entries_and_no_file_has_no_stamp(tmp_path):
    cache = FileCache(size=1)
    assert cache.get(1, None, lambda: "one") == "one"
    assert cache.get(2, None, lambda: "two") == "two"
    assert cache.get(1, None, lambda: "again") == "again"  # evicted by key 2
    assert file_stamp(None) is None and file_stamp(str(tmp_path)) is None
