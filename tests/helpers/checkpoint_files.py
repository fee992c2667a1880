"""Checkpoint generations on disk and in a store, as the backup tests build and read them."""

from __future__ import annotations

from pathlib import Path

from tfship.backup.generation import MARKER_SUFFIX, state_file_text
from tfship.backup.store import ObjectStore
from tfship.checkpoint_names import step_of


def save(ckpt_dir: Path, step: int) -> None:
    """What CheckpointManager leaves on disk: data, index, then the state file naming it."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / f"ckpt-{step}.data-00000-of-00001").write_bytes(step.to_bytes(4, "big") * 64)
    (ckpt_dir / f"ckpt-{step}.index").write_bytes(b"index")
    (ckpt_dir / "checkpoint").write_text(state_file_text(f"ckpt-{step}"))


def remote_steps(store: ObjectStore) -> list[int]:
    """Steps of the generations whose completion marker is in `store` (top level, not best/)."""
    return sorted(
        step_of(key.removesuffix(MARKER_SUFFIX))
        for key in store.list()
        if key.startswith("ckpt-") and key.endswith(MARKER_SUFFIX)
    )
