"""GPU leases (dnalm.gpus): concurrent processes never share a device, leases survive no crash,
the scheduler's CUDA_VISIBLE_DEVICES is respected, and a job without GPUs sees none."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dnalm import gpus

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")

# One "job": lease n devices through gpus.pin (pool from CUDA_VISIBLE_DEVICES), check mutual
# exclusion with O_EXCL marker files, hold the devices a while, record what it saw.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {scripts!r})
    from dnalm import gpus
    n, hold, markers, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    lease = gpus.pin(n, lock_dir=os.environ["LOCKS"], timeout=60)
    t0 = time.monotonic()
    clashes = 0
    mine = []
    for d in lease.devices:
        try:
            mine.append(os.open(os.path.join(markers, d), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            clashes += 1
    time.sleep(hold)
    for d, fd in zip(lease.devices, mine):
        os.close(fd)
        os.unlink(os.path.join(markers, d))
    t1 = time.monotonic()
    lease.release()
    with open(out, "w") as fh:
        json.dump({{"devices": lease.devices, "visible": os.environ["CUDA_VISIBLE_DEVICES"],
                   "t0": t0, "t1": t1, "clashes": clashes}}, fh)
    """
).format(scripts=SCRIPTS)


def run_jobs(tmp_path, n_jobs, n_each, pool, hold=0.4):
    markers = tmp_path / "markers"
    markers.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    env.update(CUDA_VISIBLE_DEVICES=pool, LOCKS=str(tmp_path / "locks"))
    procs = [
        subprocess.Popen([sys.executable, str(worker), str(n_each), str(hold), str(markers), str(tmp_path / f"{i}.json")], env=env)
        for i in range(n_jobs)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    return [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(n_jobs)]


def assert_no_device_shared(records):
    assert all(r["clashes"] == 0 for r in records)
    for i, a in enumerate(records):
        assert a["visible"] == ",".join(a["devices"])
        assert len(set(a["devices"])) == len(a["devices"])
        for b in records[i + 1 :]:
            if set(a["devices"]) & set(b["devices"]):
                assert a["t1"] <= b["t0"] or b["t1"] <= a["t0"], (a, b)


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    records = run_jobs(tmp_path, n_jobs=7, n_each=1, pool="0,1,2")
    assert_no_device_shared(records)
    assert {d for r in records for d in r["devices"]} == {"0", "1", "2"}
    assert all(len(r["devices"]) == 1 for r in records)


def test_multi_gpu_jobs_neither_share_nor_deadlock(tmp_path):
    records = run_jobs(tmp_path, n_jobs=5, n_each=2, pool="0,1,2", hold=0.3)
    assert_no_device_shared(records)
    assert all(len(r["devices"]) == 2 for r in records)


def test_pool_of_ids_from_cuda_visible_devices_is_respected(tmp_path):
    records = run_jobs(tmp_path, n_jobs=3, n_each=1, pool="3,GPU-5f1e", hold=0.2)
    assert_no_device_shared(records)
    assert {d for r in records for d in r["devices"]} <= {"3", "GPU-5f1e"}


def test_lease_of_a_killed_process_is_freed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {SCRIPTS!r}); from dnalm import gpus; "
         f"l = gpus.acquire(1, ['0'], {str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            gpus.acquire(1, ["0"], tmp_path, timeout=0.3, poll=0.05)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with gpus.acquire(1, ["0"], tmp_path, timeout=10, poll=0.05) as lease:
            assert lease.devices == ["0"]
    finally:
        if holder.poll() is None:
            holder.kill()


def test_release_frees_the_devices_in_process(tmp_path):
    first = gpus.acquire(2, ["0", "1"], tmp_path)
    with pytest.raises(TimeoutError):
        gpus.acquire(1, ["0", "1"], tmp_path, timeout=0.2, poll=0.05)
    first.release()
    with gpus.acquire(2, ["0", "1"], tmp_path, timeout=1) as again:
        assert again.devices == ["0", "1"]


def test_no_gpu_requested_hides_every_device(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    lease = gpus.pin(0, env=env, lock_dir=tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and lease.devices == []
    env = {}
    gpus.pin(0, env=env, lock_dir=tmp_path, detect=lambda: 4)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_pool_detected_when_cuda_visible_devices_unset(tmp_path):
    env = {}
    lease = gpus.pin(2, env=env, lock_dir=tmp_path, detect=lambda: 4)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    env2 = {}
    lease2 = gpus.pin(1, env=env2, lock_dir=tmp_path, detect=lambda: 4)
    assert env2["CUDA_VISIBLE_DEVICES"] == "2"
    lease.release()
    lease2.release()


def test_more_gpus_than_visible_gets_what_there_is(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dnalm.gpus")
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    with gpus.pin(2, env=env, lock_dir=tmp_path):
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert "only 1 are visible" in caplog.text
    env = {}
    with gpus.pin(1, env=env, lock_dir=tmp_path, detect=lambda: 0):
        assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "runs on the CPU" in caplog.text


def test_scheduler_assignment_is_left_alone(tmp_path):
    env = {"SLURM_JOB_ID": "12", "CUDA_VISIBLE_DEVICES": "1"}
    lease = gpus.pin(1, env=env, lock_dir=tmp_path / "unused")
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and lease.source == "scheduler" and lease.devices == ["1"]
    assert not (tmp_path / "unused").exists()
    env = {"SLURM_JOB_ID": "13"}
    gpus.pin(0, env=env, lock_dir=tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_detect_gpus_reads_the_driver_folder(tmp_path):
    for bus in ("0000:01:00.0", "0000:41:00.0"):
        (tmp_path / bus).mkdir()
    assert gpus.detect_gpus(tmp_path, nvidia_smi=None) == 2
    assert gpus.detect_gpus(tmp_path / "missing", nvidia_smi=None) == 0


def test_acquire_rejects_impossible_requests(tmp_path):
    with pytest.raises(ValueError):
        gpus.acquire(3, ["0", "1"], tmp_path)
    assert gpus.acquire(0, [], tmp_path).devices == []


def test_default_lock_dir_is_machine_wide_and_overridable():
    assert gpus.default_lock_dir({"DNALM_GPU_LOCK_DIR": "/x/y"}) == Path("/x/y")
    assert gpus.default_lock_dir({}).name == "dnalm-gpu-locks"


def test_lock_files_are_shared_between_users(tmp_path):
    with gpus.acquire(1, ["0"], tmp_path):
        pass
    assert (tmp_path / "gpu-0.lock").stat().st_mode & 0o777 == 0o666
    (tmp_path / "gpu-0.lock").unlink()
    old = os.umask(0o077)  # a restrictive umask must not make the lock file private
    try:
        with gpus.acquire(1, ["0"], tmp_path):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "gpu-0.lock").stat().st_mode & 0o777 == 0o666
