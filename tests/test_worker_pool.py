"""The studies' worker processes end when the process that started them is killed
(trainers.results_store.worker_pool), instead of running on as orphans."""

import os
import signal
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PARENT = textwrap.dedent("""
    import multiprocessing, time
    from trainers import results_store
    pool = results_store.worker_pool(1, poll_seconds=0.1)
    pool.submit(int, "1").result()              # the worker is set up and working
    pool.submit(time.sleep, 600)                # a 'run' that would outlive the parent
    time.sleep(0.5)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    time.sleep(600)
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_parent_is_killed():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    workers = []
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers, "the pool started no worker"
        assert all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 60
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its parent"
    finally:
        parent.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
