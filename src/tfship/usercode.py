"""Failures in user code (a model builder, a data loader): one line naming the exception and
the last frame of the user's own code, never a traceback through tfship (`tfship -v` logs it)."""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def import_module(module_name: str, fail: Callable[[str, str], Exception], owner: str) -> Any:
    """Import the user's `module_name`; any failure becomes `fail(what, hint)` (the caller's
    error type, naming its config field) saying which of the usual causes it was. `owner`
    names the module in hints ("the builder's", "the loader's")."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise fail(
                f"module '{module_name}' not found. Received: {describe(exc, owner)}",
                "install the package that provides it, or put its directory on PYTHONPATH",
            ) from None
        raise fail(
            f"importing module '{module_name}' failed: it imports a missing module. "
            f"Received: {describe(exc, owner)}",
            f"install '{exc.name}' or remove that import from {owner} module",
        ) from None
    except SyntaxError as exc:
        raise fail(
            f"module '{module_name}' has a syntax error at {exc.filename}:{exc.lineno}. "
            f"Received: {describe(exc, owner)}",
            f"fix {owner} source file",
        ) from None
    except (Exception, SystemExit) as exc:  # RecursionError and sys.exit() at import included
        raise fail(
            f"importing module '{module_name}' failed. Received: {describe(exc, owner)}",
            f"run `python -c 'import {module_name}'` to see the error, and fix the module",
        ) from None
