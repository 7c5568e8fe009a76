"""Where the original web UI's build is kept (tests/browser/webui.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import webui


def test_the_build_is_kept_in_the_users_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert webui.cache_folder() == tmp_path / "cache" / "kindler"
    assert (tmp_path / "cache" / "kindler").is_dir()


def test_without_a_writable_cache_the_build_stays_in_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file where the cache folder would be: it cannot be made.
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert webui.cache_folder() == webui.ROOT / "tmp" / "cache"
    assert not os.path.isdir(tmp_path / "cache")
