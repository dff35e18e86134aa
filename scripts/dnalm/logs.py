"""Logging set-up for rule scripts: stderr, warnings, tqdm and tracebacks go to the rule log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def to_file(log_path: str | Path) -> logging.Logger:
    """Redirect ``sys.stderr`` and the root logger to ``log_path`` (line-buffered)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "w", buffering=1)
    sys.stderr = handle
    logging.basicConfig(
        stream=handle,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger("dnalm")
