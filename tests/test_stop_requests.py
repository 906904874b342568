"""StopRequests: the first stop signal is recorded, a repeat ignored, a second Ctrl-C acts at once, handlers come back,
an ignored signal stays ignored; TrainingStopped survives pickling (moved here from the training-loop notebook)."""
import os
import pickle
import signal
import time
from pathlib import Path

import pytest

from unified_latents.train import StopRequests, TrainingStopped


@pytest.fixture
def ctrl_c_raises():
    # The state these checks assume: Ctrl-C raises KeyboardInterrupt. A process started with SIGINT ignored (a
    # background job of a non-interactive shell, `nohup bash .ci/run &`) keeps it ignored inside StopRequests,
    # rightly; so set it here.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, outer)


def test_first_signal_recorded_repeat_ignored_second_ctrl_c_acts(ctrl_c_raises):
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with StopRequests(announce=False) as requests:
        for _ in range(2):  # the second SIGTERM is ignored: the process is still here
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # Python runs the handler between bytecodes of the main thread
        assert requests.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert all(signal.getsignal(number) is handler for number, handler in before.items())


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with StopRequests(announce=False) as requests:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            assert requests.received == 0
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_training_stopped_survives_pickling():
    stopped = pickle.loads(pickle.dumps(TrainingStopped(signal.SIGTERM, 12, "runs/x")))
    assert (stopped.exit_code, stopped.step, stopped.run_dir) == (143, 12, Path("runs/x"))
    assert "stopped by SIGTERM after step 12" in str(stopped)
