"""File names in a checkpoint directory (see tfship.checkpoints), importable without TensorFlow:
the backup agent process needs them and must stay light."""

GUARD_FILE = "run.json"
BEST_DIR = "best"
BEST_FILE = "best.json"


def step_of(generation: str) -> int:
    """The step in a generation's name or path prefix (`.../ckpt-120` -> 120)."""
    return int(generation.rsplit("-", 1)[1])
