"""Helpers for tests that run ``python -m trainers.fit`` in subprocesses."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small, fast moons runs: one validation batch per 20-step epoch, no sample images
# before the end.
FAST_FLAGS = dict(dataset="moons", learning_rate=1e-3, steps_per_epoch=20,
                  validation_steps=1, summary_every=10, sample_every=100_000)


def env(**extra):
    """The environment of a trainer subprocess: quiet, CPU-only, no inherited TF_CONFIG."""
    values = dict(os.environ)
    values.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    values.pop("TF_CONFIG", None)
    values.update({k: str(v) for k, v in extra.items()})
    return values


def run_module(module, *args, check=True, timeout=600):
    """``python -m module args`` from the repository root; with ``check``, exit 0 is
    asserted (the end of stderr shown otherwise)."""
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(),
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def fit_command(model_dir, **flags):
    """``python -m trainers.fit`` with FAST_FLAGS overridden by ``flags``."""
    values = dict(FAST_FLAGS, model_dir=str(model_dir), **flags)
    return [sys.executable, "-m", "trainers.fit"] + [
        f"--{k}={v}" if not isinstance(v, bool) else f"--{'' if v else 'no'}{k}"
        for k, v in values.items()]


def start_fit(model_dir, env_extra=None, log_path=None, **flags):
    """Start a trainer in the background (output to ``log_path``, or discarded)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(fit_command(model_dir, **flags), cwd=REPO,
                                env=env(**(env_extra or {})), stdout=out,
                                stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()


def run_fit(model_dir, timeout=180, env_extra=None, **flags):
    """Run a trainer to completion; returns (exit code, stdout + stderr)."""
    result = subprocess.run(fit_command(model_dir, **flags), cwd=REPO,
                            env=env(**(env_extra or {})), capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def run_fits(jobs, timeout=240):
    """Run several trainers at once; ``jobs`` is a list of (model_dir, flags) pairs.

    Returns [(exit code, output)] in order. Every process is killed on error or timeout.
    """
    procs = []
    try:
        for model_dir, flags in jobs:
            procs.append(subprocess.Popen(
                fit_command(model_dir, **flags), cwd=REPO, env=env(),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + timeout
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            results.append((proc.returncode, out))
        return results
    finally:
        for proc in procs:
            kill(proc)


def kill(proc):
    """SIGKILL ``proc`` (one we started) if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count):
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _state(variables):
    # Keyed by position and shape: Keras numbers layer (and so variable) names per
    # process, so two models restored in one process have different names.
    return {f"{i}:{tuple(v.shape)}": np.asarray(v.numpy())
            for i, v in enumerate(variables)}


def model_state(model):
    """{key: array} of every model variable (trainable or not), in a stable order."""
    return _state(model.weights)


def optimizer_state(optimizer):
    """{key: array} of an optimizer's variables (iterations, moments)."""
    return _state(optimizer.variables)


def assert_states_close(a, b, atol=1e-5, rtol=1e-5):
    assert a.keys() == b.keys()
    bad = [(k, float(np.max(np.abs(a[k] - b[k])))) for k in a
           if not np.allclose(a[k], b[k], atol=atol, rtol=rtol)]
    assert not bad, f"{len(bad)} of {len(a)} variables differ (max abs diff): {bad[:5]}"


def scalars(log_dir, tag):
    """{step: value} of one TensorBoard scalar over every event file in ``log_dir``."""
    from tf_dpvae import callbacks
    return callbacks.read_scalars(log_dir, tag)


def copy_checkpoint(src_dir, dst_dir, step):
    """A new model_dir holding config.json and ckpt-``step`` of ``src_dir`` (as latest)."""
    import shutil

    os.makedirs(dst_dir)
    shutil.copy(os.path.join(src_dir, "config.json"), dst_dir)
    prefix = f"ckpt-{step}"
    names = [n for n in os.listdir(src_dir) if n.startswith(prefix + ".")]
    assert names, f"no {prefix} in {src_dir}: {os.listdir(src_dir)}"
    for name in names:
        shutil.copy(os.path.join(src_dir, name), dst_dir)
    with open(os.path.join(dst_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
