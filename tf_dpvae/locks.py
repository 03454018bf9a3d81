"""An exclusive lock on a directory, so that two processes never write one model.

``with exclusive(model_dir, flag="--model_dir"):`` takes an advisory ``flock`` on
``<dir>/.lock``. The operating system releases it when the process ends in any way
(exit, exception, SIGKILL), so a lock can never outlive its holder; the file itself
stays and holds the holder's pid, host, command and start time while it is held, and
is emptied on a clean release. A second process gets :class:`LockedError` naming the
holder. A lock file that is not locked but still names a holder is the trace of a
killed process: it is reported (one line on stderr) and taken over.

``flock`` locks are per open file description: a second ``exclusive`` on the same
directory in the same process is refused as well (that is a bug in the caller). They
are not reliable on some network filesystems (NFS before v4).
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys

LOCK_FILENAME = ".lock"


class LockedError(ValueError):
    """The directory is held by another process (a user error: one line)."""


def _holder_text(text):
    try:
        holder = json.loads(text)
        return (f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: "
                f"{holder['command']}")
    except (ValueError, KeyError, TypeError):
        return text.strip()[:200] or "another process"


@contextlib.contextmanager
def exclusive(directory, flag="--model_dir", say=None, filename=LOCK_FILENAME):
    """Hold ``directory``'s lock for the ``with`` block (the directory must exist);
    ``filename`` names a lock of another purpose on the same directory."""
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    path = os.path.join(directory, filename)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise LockedError(
                f"{flag}={directory} is in use by another process ({holder}); wait for "
                f"it to finish, or use another {flag}") from None
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        if previous.strip():
            say(f"{flag}={directory}: taking over the lock of a process that did not "
                f"release it (killed?): {_holder_text(previous)}")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.datetime.now().isoformat(timespec="seconds"),
                  "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
