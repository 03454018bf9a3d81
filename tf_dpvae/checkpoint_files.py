"""The checkpoint files of a model directory, read and repaired without TensorFlow.

``tf.train.CheckpointManager`` writes ``ckpt-N.index`` + ``ckpt-N.data-*`` per
checkpoint and a ``checkpoint`` state file naming the latest and the kept ones. The
state file is a convenience, not the truth: a crash, a user or a full disk can delete
it, truncate it or leave it naming files that are gone. Here the checkpoints on disk
are the ``ckpt-N.index`` files themselves, newest (largest N) first; the state file
is only compared with them (:func:`state_problem`) and rewritten from them
(:func:`write_state`).

Also: ``ckpt-N_temp/`` directories (TF's staging of a checkpoint write killed part-way)
are leftovers, removed by :func:`remove_leftovers`; a checkpoint found unreadable is
moved into ``corrupt/``, one whose weights may have given a non-finite loss into
``diverged/`` (:func:`quarantine`), so that nothing overwrites it and the manager never
lists it again.
"""

import glob
import os
import re
import shutil

STATE_FILENAME = "checkpoint"
PREFIX = "ckpt"
CORRUPT_DIRNAME = "corrupt"
DIVERGED_DIRNAME = "diverged"
_INDEX = re.compile(rf"^{PREFIX}-(\d+)\.index$")
_TEMP = re.compile(rf"^{PREFIX}-\d+_temp(_[0-9a-f]+)?$")
_STATE_LINE = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths|'
                         r'all_model_checkpoint_timestamps|last_preserved_timestamp):'
                         r'\s*(".*"|[0-9.eE+-]+)\s*$')


def step_of(prefix):
    """N of ``.../ckpt-N``."""
    return int(os.path.basename(prefix).rsplit("-", 1)[1])


def on_disk(model_dir):
    """Prefixes of the checkpoints in ``model_dir`` (``ckpt-N.index`` present), newest
    first."""
    if not os.path.isdir(model_dir):
        return []
    steps = sorted((int(m.group(1)) for m in map(_INDEX.match, os.listdir(model_dir))
                    if m), reverse=True)
    return [os.path.join(model_dir, f"{PREFIX}-{n}") for n in steps]


def read_state(model_dir):
    """(latest, all) prefixes the state file names, as written; raises ValueError
    naming the file if it is unreadable, FileNotFoundError if it is missing."""
    path = os.path.join(model_dir, STATE_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a checkpoint state file (not text: {error.reason} "
                         f"at byte {error.start})") from error
    latest, every = None, []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _STATE_LINE.match(line.strip())
        if not match:
            raise ValueError(f"{path}: not a checkpoint state file (line {number}: "
                             f"{line.strip()[:60]!r})")
        key, value = match.groups()
        if key == "model_checkpoint_path":
            latest = _absolute(model_dir, value.strip('"'))
        elif key == "all_model_checkpoint_paths":
            every.append(_absolute(model_dir, value.strip('"')))
    if latest is None:
        raise ValueError(f"{path}: not a checkpoint state file (no model_checkpoint_path)")
    return latest, every


def _absolute(model_dir, prefix):
    return prefix if os.path.isabs(prefix) else os.path.join(model_dir, prefix)


def state_problem(model_dir):
    """Why the state file does not describe the checkpoints on disk (a sentence), or
    None if it does (or there are no checkpoints and no state file)."""
    present = on_disk(model_dir)
    path = os.path.join(model_dir, STATE_FILENAME)
    try:
        latest, _ = read_state(model_dir)
    except FileNotFoundError:
        return f"{path} is missing" if present else None
    except (OSError, ValueError) as error:
        return str(error)
    if not present:
        return f"{path} names {latest}, but there is no ckpt-N.index in {model_dir}"
    if os.path.normpath(latest) != os.path.normpath(present[0]):
        return f"{path} names {latest}, but the newest on disk is {present[0]}"
    return None


def write_state(model_dir, prefixes):
    """Rewrite the state file to list ``prefixes`` (newest first), atomically; removes
    it when there are none."""
    path = os.path.join(model_dir, STATE_FILENAME)
    if not prefixes:
        if os.path.lexists(path):
            os.remove(path)
        return
    names = [os.path.basename(p) for p in prefixes]
    lines = [f'model_checkpoint_path: "{names[0]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in reversed(names)]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def files_of(prefix):
    """The files of one checkpoint (index and data shards)."""
    return sorted(glob.glob(glob.escape(prefix) + ".index")
                  + glob.glob(glob.escape(prefix) + ".data-*"))


def quarantine(prefix, dirname=CORRUPT_DIRNAME):
    """Move a checkpoint's files into ``<model_dir>/<dirname>/`` (``corrupt/``: it is
    unreadable; ``diverged/``: its weights gave a non-finite loss); returns that
    directory."""
    target = os.path.join(os.path.dirname(prefix), dirname)
    os.makedirs(target, exist_ok=True)
    for name in files_of(prefix):
        destination = os.path.join(target, os.path.basename(name))
        if os.path.exists(destination):
            os.remove(destination)
        os.replace(name, destination)
    return target


def remove_leftovers(model_dir):
    """Remove what a killed checkpoint write leaves (``ckpt-N_temp*/``, the state
    file's and config.json's ``.tmp*`` files); returns the removed paths."""
    removed = []
    if not os.path.isdir(model_dir):
        return removed
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if _TEMP.match(name) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif name.startswith(STATE_FILENAME + ".tmp") or name == "config.json.tmp":
            os.remove(path)
            removed.append(path)
    return removed
