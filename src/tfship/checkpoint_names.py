"""File names in a checkpoint directory (see tfship.checkpoints), importable without TensorFlow:
the backup agent process needs them and must stay light."""

GUARD_FILE = "run.json"
BEST_DIR = "best"
BEST_FILE = "best.json"
