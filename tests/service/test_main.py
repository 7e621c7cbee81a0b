"""``python -m service``'s process settings."""

from __future__ import annotations

import platform

import pytest

from service.__main__ import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_arenas_are_capped_on_glibc() -> None:
    assert limit_malloc_arenas(2) is True
