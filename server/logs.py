"""Log files the runbook's queries read, under --log-dir.

- ``app.log``: server life cycle and ``Policy <name> updated ...`` (sampled);
- ``workers.log``: background work, ``Reward <decision_id> computed ...``;
- ``api.log``: failed calls, ``ERROR <method> <code>: <message>``;
- ``guardrails.log``: ``GUARDRAIL FAIL ...`` lines from the guardrail job.

Lines are ``<ISO time> <LEVEL> <logger> <message>``; the messages themselves start
with the words the runbook greps for.

Writing happens off the event loop: the ``banditd`` logger only puts each record on a
queue (``logging.handlers.QueueHandler``), and a listener thread writes the files and
the console. An error storm (a failed call logs one ``api.log`` line) then costs the
serving loop a queue put instead of a file write. ``flush()`` waits until every queued
line is written; ``shutdown()`` (also run at exit) drains the queue and closes the files.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path

FILES = {
    "banditd.app": "app.log",
    "banditd.workers": "workers.log",
    "banditd.api": "api.log",
    "banditd.guardrails": "guardrails.log",
}
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_ROOT = "banditd"
_listener: QueueListener | None = None


def configure(
    log_dir: str | Path | None, *, level: int = logging.INFO, console: bool = True,
    prefix: str | None = None,
) -> None:
    """Route ``banditd.*`` records to one file per runbook log (and the console);
    ``prefix`` (a worker's name) starts every message, when several processes write."""
    global _listener
    shutdown()
    logging.getLogger(_ROOT).setLevel(level)
    formatter = logging.Formatter(
        _FORMAT if prefix is None else _FORMAT.replace("%(message)s", f"[{prefix}] %(message)s"))
    handlers: list[logging.Handler] = []
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.INFO)
        handlers.append(stream)
    if log_dir is not None:
        directory = Path(log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for name, filename in FILES.items():
            handler = logging.FileHandler(directory / filename, encoding="utf-8")
            handler.addFilter(logging.Filter(name))  # that logger and its children
            handlers.append(handler)
    if not handlers:
        return
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.Queue = queue.Queue()
    logging.getLogger(_ROOT).addHandler(QueueHandler(records))
    _listener = QueueListener(records, *handlers, respect_handler_level=True)
    _listener.start()


def flush() -> None:
    """Block until every record logged so far is written."""
    if _listener is not None:
        _listener.queue.join()
        for handler in _listener.handlers:
            handler.flush()


def shutdown() -> None:
    """Write what is queued, stop the writer thread and close the files."""
    global _listener
    root = logging.getLogger(_ROOT)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None


atexit.register(shutdown)
