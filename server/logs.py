"""Log files the runbook's queries read, under --log-dir.

- ``app.log``: server life cycle and ``Policy <name> updated ...`` (sampled);
- ``workers.log``: background work, ``Reward <decision_id> computed ...``;
- ``api.log``: failed calls, ``ERROR <method> <code>: <message>``;
- ``guardrails.log``: ``GUARDRAIL FAIL ...`` lines from the guardrail job.

Lines are ``<ISO time> <LEVEL> <logger> <message>``; the messages themselves start
with the words the runbook greps for.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FILES = {
    "banditd.app": "app.log",
    "banditd.workers": "workers.log",
    "banditd.api": "api.log",
    "banditd.guardrails": "guardrails.log",
}
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(
    log_dir: str | Path | None, *, level: int = logging.INFO, console: bool = True
) -> None:
    """Attach one file handler per runbook log (and a console handler)."""
    formatter = logging.Formatter(_FORMAT)
    root = logging.getLogger("banditd")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        stream.setLevel(logging.INFO)
        root.addHandler(stream)
    if log_dir is None:
        return
    directory = Path(log_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for name, filename in FILES.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        handler = logging.FileHandler(directory / filename, encoding="utf-8")
        handler.setFormatter(formatter)
        logger.addHandler(handler)
