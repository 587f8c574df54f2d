"""WrittenDigests: what ferry last wrote per key (two-way sync echo suppression), on every backend."""

from __future__ import annotations

from .conftest import BackendFactory


def test_digests_are_saved_replaced_and_read_by_key(backend: BackendFactory) -> None:
    store = backend.open()
    assert store.written_digests("p", "Contact", ["a", "b"]) == {}
    store.save_written_digests("p", "Contact", {"a": "d1", "b": "d2"})
    store.save_written_digests("p", "Contact", {"a": "d3"})  # a newer write replaces it
    store.save_written_digests("q", "Contact", {"a": "other pipeline"})
    store.save_written_digests("p", "Account", {"a": "other object"})
    again = backend.open()  # another process of the same pipeline sees it
    assert again.written_digests("p", "Contact", ["a", "b", "c"]) == {"a": "d3", "b": "d2"}
    assert again.written_digests("q", "Contact", ["a"]) == {"a": "other pipeline"}


def test_many_keys_at_once(backend: BackendFactory) -> None:
    store = backend.open()
    keys = [f"k{i}" for i in range(2500)]  # past an IN list's part size
    store.save_written_digests("p", "Contact", {k: k.upper() for k in keys})
    got = store.written_digests("p", "Contact", keys)
    assert len(got) == 2500 and got["k1234"] == "K1234"
