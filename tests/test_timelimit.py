"""dnalm.timelimit: SIGUSR1 to this process a margin before the SLURM job's time limit."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from dnalm import timelimit


def test_parse_time_left_reads_every_squeue_format():
    # squeue -o %L: [days-][hours:]minutes:seconds (formats printed by SLURM 22.05 here)
    assert timelimit.parse_time_left("0:42") == 42
    assert timelimit.parse_time_left("1:58\n") == 118
    assert timelimit.parse_time_left("2:03:04") == 2 * 3600 + 3 * 60 + 4
    assert timelimit.parse_time_left("1-01:59:58") == 86400 + 3600 + 59 * 60 + 58
    assert timelimit.parse_time_left("3-00:00:00") == 3 * 86400
    for none in ("UNLIMITED", "NOT_SET", "INVALID", "", "  "):
        assert timelimit.parse_time_left(none) is None
    for bad in ("soon", "1:2:3:4", "-5:00", "1-x:00"):
        with pytest.raises(ValueError, match="time left"):
            timelimit.parse_time_left(bad)


def test_time_left_asks_squeue_and_survives_its_failures():
    calls = []

    def fake(answer, rc=0):
        def run(cmd, **kw):
            calls.append(cmd)
            return subprocess.CompletedProcess(cmd, rc, answer, "squeue: error: Invalid job id specified")

        return run

    assert timelimit.time_left("77", run=fake("4:10\n")) == 250
    assert calls[-1] == ["squeue", "-h", "-j", "77", "-o", "%L"]
    assert timelimit.time_left("77", run=fake("UNLIMITED\n")) is None
    assert timelimit.time_left("77", run=fake("", rc=1)) is None

    def missing(cmd, **kw):
        raise FileNotFoundError("squeue")

    assert timelimit.time_left("77", run=missing) is None


class Counter(list):
    """Records the times of SIGUSR1 (stands in for the training loop's handler)."""

    def __call__(self, signum, frame):
        self.append(time.monotonic())


@pytest.fixture
def usr1_counter():
    """A SIGUSR1 counter installed as the handler before the test (and restored after)."""
    got = Counter()
    previous = signal.signal(signal.SIGUSR1, got)
    yield got
    signal.signal(signal.SIGUSR1, previous)


def test_watchdog_signals_this_process_margin_before_the_limit(usr1_counter):
    asked = []

    def query(job_id):
        asked.append(job_id)
        return 10  # seconds left

    t0 = time.monotonic()
    with timelimit.stop_before_limit(9.7, env={"SLURM_JOB_ID": "5"}, query=query) as delay:
        assert delay == pytest.approx(0.3)
        signal.signal(signal.SIGUSR1, usr1_counter)  # the training loop installs its handler
        while not usr1_counter and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        time.sleep(0.5)
    assert asked == ["5"] and len(usr1_counter) == 1  # once
    assert 0.25 <= usr1_counter[0] - t0 < 2.0  # at 10 - 9.7 s, not before


def test_watchdog_signal_waits_until_training_listens(usr1_counter):
    """Due before the training loop has its handler (loading data, say): sent once it has."""
    t0 = time.monotonic()
    with timelimit.stop_before_limit(9.9, env={"SLURM_JOB_ID": "5"}, query=lambda j: 10, poll_s=0.05):
        time.sleep(0.6)  # due at 0.1 s
        assert usr1_counter == []
        t_listen = time.monotonic()
        signal.signal(signal.SIGUSR1, usr1_counter)
        while not usr1_counter and time.monotonic() - t0 < 10:
            time.sleep(0.01)
    assert len(usr1_counter) == 1 and t_listen <= usr1_counter[0] < t_listen + 1.0


def test_watchdog_absorbs_an_early_signal_and_restores_the_handler(usr1_counter):
    with timelimit.stop_before_limit(5, env={"SLURM_JOB_ID": "5"}, query=lambda j: 3600):
        # the training's handler is not installed yet: the default action would kill us
        signal.raise_signal(signal.SIGUSR1)
        time.sleep(0.05)
    assert usr1_counter == []
    signal.raise_signal(signal.SIGUSR1)  # the previous handler is back
    time.sleep(0.05)
    assert len(usr1_counter) == 1


def test_no_watchdog_without_a_limit_or_outside_slurm(usr1_counter, caplog):
    def no_query(job_id):
        raise AssertionError("squeue must not be asked")

    with timelimit.stop_before_limit(60, env={}, query=no_query) as delay:
        assert delay is None
    with timelimit.stop_before_limit(0, env={"SLURM_JOB_ID": "5"}, query=no_query) as delay:
        assert delay is None
    with timelimit.stop_before_limit(60, env={"SLURM_JOB_ID": "5"}, query=lambda j: None) as delay:
        assert delay is None
    with timelimit.stop_before_limit(60, env={"SLURM_JOB_ID": "5"}, query=lambda j: 45) as delay:
        assert delay is None
    assert "has 45 s left, not more than stop_before_limit_s=60" in caplog.text
    time.sleep(0.1)
    assert usr1_counter == []
