"""What 0.1.0 code wrote still works, with a DeprecationWarning naming the new spelling."""

from __future__ import annotations

import pytest
from rdzv_plugin_tcp import MAX_FRAME_SIZE_KEYWORD, ServerLimits, StoreServer, TCPStore


def test_tcpstore_max_frame_size_keyword_still_sets_the_limit_and_warns() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        store = TCPStore("127.0.0.1", 0, is_master=True, max_frame_size=4096)
    try:
        assert [str(w.message) for w in caught] == [MAX_FRAME_SIZE_KEYWORD.message]
        assert caught[0].filename == __file__, "the warning points at the caller's line"
        assert "limits=ServerLimits(max_frame_size=...)" in str(caught[0].message)
        assert "removed in 0.4.0" in str(caught[0].message)
        assert store.server is not None and store.server.limits.max_frame_size == 4096
        with pytest.raises(ValueError, match="limit of 4096 bytes"):
            store.set("big", bytes(8192))
        store.set("small", b"ok")  # the connection stays usable
        assert store.get("small") == b"ok"
    finally:
        store.close()


def test_storeserver_max_frame_size_keyword_still_sets_the_limit_and_warns() -> None:
    with pytest.warns(DeprecationWarning, match="max_frame_size keyword") as caught:
        server = StoreServer("127.0.0.1", 0, max_frame_size=2048)
    try:
        assert caught[0].filename == __file__
        assert server.limits == ServerLimits(max_frame_size=2048)
    finally:
        server.stop()


def test_the_keyword_and_limits_together_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="takes max_frame_size or limits, not both"):
        TCPStore("127.0.0.1", 0, is_master=True, limits=ServerLimits(), max_frame_size=4096)
