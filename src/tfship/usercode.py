"""Failures in user code (a model builder, a data loader): one line naming the exception and
the last frame of the user's own code, never a traceback through tfship (`tfship -v` logs it)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import tfship

log = logging.getLogger(__name__)

_TFSHIP_DIR = str(Path(tfship.__file__).parent)
MAX_DETAIL = 300


def describe(exc: BaseException, what: str) -> str:
    """`Type: message (at file:line)` with the user's frame; the traceback goes to the debug log."""
    log.debug("%s failure", what, exc_info=exc)
    text = f"{type(exc).__name__}: {exc}"
    text = text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not any(s in f.filename for s in ("site-packages", "dist-packages", "<frozen"))
        and not f.filename.startswith(_TFSHIP_DIR)
    ]
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text
