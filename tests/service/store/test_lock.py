"""One service process per data folder (issue 55): a second refuses to start, naming the
folder and the holder."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from service.errors import DataDirInUse
from service.store.lock import hold_data_dir, release_data_dir
from tests.conftest import start_service, stop_process

TAKE = ("import sys; from service.store.lock import hold_data_dir; "
        "hold_data_dir(sys.argv[1]); print('held')")


def _take_elsewhere(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TAKE, str(folder)], capture_output=True,
                          text=True, timeout=60)


def test_a_second_process_cannot_take_a_held_folder_and_can_once_it_is_given_back(
        tmp_path) -> None:
    folder = tmp_path / "data"
    hold_data_dir(folder)
    hold_data_dir(folder)  # the same process again (two apps in one test): counted
    try:
        other = _take_elsewhere(folder)
        assert other.returncode != 0
        assert "DataDirInUse" in other.stderr
        assert str(folder.resolve()) in other.stderr and f"pid {os.getpid()}" in other.stderr
        release_data_dir(folder)
        assert _take_elsewhere(folder).returncode != 0  # one hold is left
    finally:
        release_data_dir(folder)
    assert _take_elsewhere(folder).stdout.strip() == "held"


def test_the_error_names_the_folder_and_what_to_do(tmp_path) -> None:
    folder = tmp_path / "data"
    subprocess_holder = subprocess.Popen(
        [sys.executable, "-c", TAKE + "; sys.stdout.flush(); sys.stdin.read()", str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert subprocess_holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirInUse) as caught:
            hold_data_dir(folder)
        message = caught.value.message
        assert str(folder.resolve()) in message
        assert f"pid {subprocess_holder.pid}" in message
        assert "another DATA_DIR" in message
    finally:
        subprocess_holder.stdin.close()
        subprocess_holder.wait(timeout=30)
    hold_data_dir(folder)  # the holder ended: the kernel dropped its lock
    release_data_dir(folder)


@pytest.mark.slow
def test_a_second_service_on_the_same_data_dir_exits_at_once_naming_the_first(
        tmp_path) -> None:
    data = tmp_path / "data"
    first, url = start_service(data, tmp_path / "first.log")
    try:
        second = subprocess.run([sys.executable, "-m", "service"], capture_output=True,
                                text=True, timeout=60,
                                env=os.environ | {"DATA_DIR": str(data), "PORT": "1"})
        assert second.returncode == 3, second.stderr[-2000:]
        assert str(data.resolve()) in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "models loaded" not in second.stderr  # refused before anything was loaded
        assert httpx.get(f"{url}/readyz").status_code == 200  # the first is untouched
    finally:
        stop_process(first)
