"""The run folder's lock in one process: a second holder is refused with the PID, a file system without flock trains
unguarded with a warning, the lock is released at the end (moved here from the run-folder notebook; the lock held by
another process is tested in test_cli_train.py)."""
import fcntl
import os
import warnings

import pytest

from unified_latents.run_folder import run_lock


def test_a_second_holder_is_refused_naming_the_pid(tmp_path):
    with run_lock(tmp_path):  # a second open file of the same lock conflicts, as another process's would
        with pytest.raises(ValueError, match=f"is in use by another training run \\(PID {os.getpid()}"):
            run_lock(tmp_path).__enter__()
    with run_lock(tmp_path):  # released at the end of the block
        pass


def test_a_file_system_without_flock_trains_unguarded_with_a_warning(tmp_path, monkeypatch):
    def no_flock(fd, operation):  # ENOLCK, as on some network mounts
        raise OSError(37, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with run_lock(tmp_path):
            pass
    assert any("cannot lock" in str(w.message) for w in caught)
