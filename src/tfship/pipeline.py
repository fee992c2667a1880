"""`tfship run`: the stages chained locally, in the order a CI pipeline runs them.

Each stage is the same function its own command calls; this module only sequences them, times
them and collects their results. A stage that raises stops the run with that error's exit code.
The data is loaded and split once, by the data stage, and handed to the stages after it (as
their own commands, in separate CI jobs, load it themselves): in one process nothing can change
it between stages, and reading and decoding it is the same work each time.

Independent work overlaps: the export's fresh-process loader check starts importing TensorFlow
when the run starts, alongside this process's own import (`tfship.cpp_loader.prestart`), and
the Trivy scans of the project tree, which need only its files, run in the background from the
start of the train stage (`tfship.scan.stage.start_tree_scans`); the scan stage collects them,
in its place in the order, and raises their failure with its exit code. A run that stops
earlier still waits for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tfship.config import PipelineConfig, dump_config
from tfship.errors import ConfigError
from tfship.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOutcome:
    name: str
    seconds: float
    result: Any


@dataclass(frozen=True)
class RunResult:
    """Every stage's result, in order, and where the run directory is."""

    run_dir: str
    stages: tuple[StageOutcome, ...]
    exit_code: int = 0

    def render_text(self) -> str:
        lines = [f"tfship run: {len(self.stages)} stages, outputs in {self.run_dir}/"]
        for s in self.stages:
            text = s.result.render_text() if hasattr(s.result, "render_text") else str(s.result)
            lines.append(f"\n== {s.name} ({s.seconds:.1f} s)")
            lines.extend(f"  {line}" for line in text.splitlines())
        return "\n".join(lines)


def _splits(cfg: PipelineConfig, shared: dict[str, Any]) -> Any:
    if "splits" not in shared:
        from tfship.data import load_splits

        shared["splits"] = load_splits(cfg)
    return shared["splits"]


def _data(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    from tfship.data import run_data

    return run_data(cfg, run_dir, splits=_splits(cfg, shared))


def _start_tree_scans(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> None:
    # The project's Trivy scans read only its files: start them with training, which leaves
    # part of the machine idle (a small model's steps do not fill 2 cores; measured: a run
    # with scans 9.4 -> 8.5 s against starting them with the export). Once per run; the scan
    # stage collects them and raises their errors.
    if shared.get("scan_follows") and "tree_scans" not in shared:
        from tfship.scan.stage import start_tree_scans

        shared["tree_scans"] = start_tree_scans(cfg, run_dir)


def _train(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    from tfship.train import run_train

    _start_tree_scans(cfg, run_dir, shared)
    return run_train(cfg, run_dir, splits=_splits(cfg, shared))


def _export(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    from tfship.export import run_export

    _start_tree_scans(cfg, run_dir, shared)  # a run that skipped training
    return run_export(cfg, run_dir, splits=_splits(cfg, shared))


def _scan(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    # Trivy config + secret scans of the project and the export (exit 10 findings, 11 scanner);
    # before evaluate, so the MR report can include scan/summary.md. The project scans were
    # started with the train stage; this collects them and raises their errors.
    from tfship.scan import run_scan_for_pipeline

    return run_scan_for_pipeline(cfg, run_dir, tree=shared.pop("tree_scans", None))


def _evaluate(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    # Evaluate the export, apply the gate, write the report; a failed gate sets exit_code 7.
    from tfship.gate import evaluate_and_gate

    return evaluate_and_gate(cfg, run_dir, splits=_splits(cfg, shared))


def _deploy(cfg: PipelineConfig, run_dir: RunDir, shared: dict[str, Any]) -> Any:
    # Locally (no serving.rest_url) this publishes to the model repository, writes
    # models.config and runs the offline checks; with a server it is a real canary + promote.
    from tfship.serving.deploy import run_deploy

    return run_deploy(cfg, run_dir, reason="tfship run", promote=True)


# (name, stage). Later stages read what earlier ones wrote to the run directory.
STAGES: list[tuple[str, Callable[[PipelineConfig, RunDir, dict[str, Any]], Any]]] = [
    ("data", _data),
    ("train", _train),
    ("export", _export),
    ("scan", _scan),
    ("evaluate", _evaluate),
    ("deploy", _deploy),
]


def _wipe(run_dir: RunDir) -> None:
    import shutil

    if not run_dir.root.exists():
        return
    # Only ever delete something that is recognisably a run directory: `--fresh --run-dir .`
    # must not remove a project.
    if not run_dir.config.is_file():
        raise ConfigError(
            f"--fresh: {run_dir.root} does not look like a run directory "
            f"(no {run_dir.config.name}); refusing to delete it",
            hint="pass the run directory itself, or delete it by hand",
        )
    shutil.rmtree(run_dir.root)


def run_pipeline(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    skip: frozenset[str] = frozenset(),
    fresh: bool = False,
) -> RunResult:
    """Run every stage not in `skip`, in order; `fresh` deletes the run's earlier outputs."""
    if fresh:
        _wipe(run_dir)
        from tfship.checkpoint_guard import start_fresh

        cfg = start_fresh(cfg, run_dir)  # checkpoints kept outside the run dir, the backup
    if "export" not in skip:
        from tfship.cluster import is_chief
        from tfship.cpp_loader import prestart

        if is_chief():
            # The export's loader check runs in a fresh interpreter that spends most of its
            # time importing TensorFlow: start it before this one imports TensorFlow, so the
            # two imports share the machine instead of the check's import sharing it with
            # training (measured on 2 cores: the export stage 1.8 s -> 1.0 s).
            prestart()
    from tfship.distribute import configure_devices

    # Logical CPU devices can only be set before TensorFlow initialises, and a stage before
    # `train` (e.g. TFRecord loading) may already run TF ops.
    configure_devices(cfg.train)
    run_dir.ensure()
    dump_config(cfg, run_dir.config)
    outcomes: list[StageOutcome] = []
    # What one stage computed for the next (the splits), and what is still to come.
    shared: dict[str, Any] = {
        "scan_follows": "scan" not in skip,
    }
    try:
        exit_code = _run_stages(cfg, run_dir, skip, shared, outcomes)
    finally:
        from tfship.cpp_loader import discard

        discard()  # a prestarted loader the run did not get to use
        tree = shared.pop("tree_scans", None)
        if tree is not None:  # the run stopped before its scan stage: let them finish
            tree.wait()
    return RunResult(str(run_dir.root), tuple(outcomes), exit_code)


def _run_stages(
    cfg: PipelineConfig,
    run_dir: RunDir,
    skip: frozenset[str],
    shared: dict[str, Any],
    outcomes: list[StageOutcome],
) -> int:
    exit_code = 0
    for name, stage in STAGES:
        if name in skip:
            continue
        log.info("stage %s: started", name)
        t0 = time.perf_counter()
        result = stage(cfg, run_dir, shared)
        seconds = time.perf_counter() - t0
        log.info("stage %s: done in %.1f s", name, seconds)
        outcomes.append(StageOutcome(name, seconds, result))
        # A stage may end with a verdict it does not raise for (a failed gate returns exit
        # code 7 so its report is still written): nothing after it may run on that model.
        exit_code = int(getattr(result, "exit_code", 0))
        if exit_code:
            log.info("stage %s: exit code %d, stopping the run here", name, exit_code)
            break
    return exit_code
