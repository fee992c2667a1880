"""One exception hierarchy and one exit-code table for every tfship command.

The CI YAML branches on these codes (e.g. GitLab `retry: exit_codes: [75]` retries only a
preempted training job), so they are part of the public interface: never renumber one.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in tfship: please report it with the traceback
    USAGE = 2  # bad command-line usage (argparse's own code)
    CONFIG = 3  # pipeline.yaml / TFSHIP_* / flags invalid
    DATA = 4  # input data missing, empty or malformed
    DIVERGED = 5  # training produced NaN/Inf; the last good checkpoint is kept
    MODEL = 6  # model cannot be built, exported, loaded or fails its golden requests
    GATE_FAILED = 7  # evaluation gate said no (model not good enough)
    INFRA = 8  # a server, registry or object store is unreachable or erroring
    DEPLOY_FAILED = 9  # deploy failed and was rolled back; `stable` still serves the old model
    SCAN_FINDINGS = 10  # security findings at or above the configured severity
    SCANNER = 11  # the scanner itself failed (missing binary, timeout, no DB): never a pass
    NO_CHANGE = 12  # `tfship data changed`: nothing new, skip retraining
    RESTORE_FAILED = 13  # an action failed AND its undo did not complete: a person must look
    LOCKED = 14  # another deploy action holds the model repository's lease; nothing changed
    PREEMPTED = 75  # SIGTERM during training: checkpoint saved, relaunch to resume (EX_TEMPFAIL)


class TfshipError(Exception):
    """Base class. `str(err)` must say what happened, what was expected and how to fix it."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(TfshipError):
    exit_code = ExitCode.CONFIG


class DataError(TfshipError):
    exit_code = ExitCode.DATA


class TrainingDiverged(TfshipError):
    exit_code = ExitCode.DIVERGED


class Preempted(TfshipError):
    """Raised after a SIGTERM once the checkpoint is safely written."""

    exit_code = ExitCode.PREEMPTED


class ModelError(TfshipError):
    exit_code = ExitCode.MODEL


class GateFailed(TfshipError):
    exit_code = ExitCode.GATE_FAILED


class InfraError(TfshipError):
    exit_code = ExitCode.INFRA


class DeployFailed(TfshipError):
    exit_code = ExitCode.DEPLOY_FAILED


class ScanFindings(TfshipError):
    exit_code = ExitCode.SCAN_FINDINGS


class ScannerError(TfshipError):
    exit_code = ExitCode.SCANNER


class NoChange(TfshipError):
    exit_code = ExitCode.NO_CHANGE


class RestoreFailed(TfshipError):
    """A deploy action failed and putting the previous state back did not fully succeed.

    Never exit 9: what the server serves, or what it would load on restart, may not be the old
    `stable`. The unfinished action stays in the repository's journal (`tfship status`); the
    next deploy/promote/rollback finishes the undo before it does anything else.
    """

    exit_code = ExitCode.RESTORE_FAILED


class Locked(TfshipError):
    """Another deploy action holds the model repository's lease; this one changed nothing."""

    exit_code = ExitCode.LOCKED


EXIT_CODE_DOC: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL: "unexpected internal error (a bug: report it with the traceback)",
    ExitCode.USAGE: "bad command-line usage",
    ExitCode.CONFIG: "invalid configuration (pipeline.yaml, TFSHIP_* variables, flags)",
    ExitCode.DATA: "input data missing, empty or malformed",
    ExitCode.DIVERGED: "training diverged (NaN/Inf loss); last good checkpoint kept",
    ExitCode.MODEL: "model cannot be built/exported/loaded, or golden requests disagree",
    ExitCode.GATE_FAILED: "evaluation gate failed: the model is not good enough",
    ExitCode.INFRA: "infrastructure unreachable or erroring (server, registry, object store)",
    ExitCode.DEPLOY_FAILED: "deploy failed and was rolled back; stable keeps serving",
    ExitCode.SCAN_FINDINGS: "security findings at or above the configured severity",
    ExitCode.SCANNER: "the scanner failed (missing binary, timeout, no vulnerability DB)",
    ExitCode.NO_CHANGE: "no new or changed data: retraining not needed",
    ExitCode.RESTORE_FAILED: "deploy failed and its undo did not complete; see `tfship status`",
    ExitCode.LOCKED: "another deploy action holds the repository lease; nothing changed, retry",
    ExitCode.PREEMPTED: "preempted (SIGTERM): checkpoint saved; rerun the same command to resume",
}
