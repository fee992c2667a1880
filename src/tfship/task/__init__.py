"""The task seam: everything that changes with the learning problem, behind one object.

`task.type` in pipeline.yaml picks a task; every stage asks it instead of assuming image
classification:

```python
from tfship.task import load_task

task = load_task("binary", {"threshold": 0.3})
task.metric_directions()             # gate vocabulary -> "higher" / "lower" (no TensorFlow)
y, names = task.encode(raw_labels)   # labels for training, names for data.json
loss = task.per_example_loss(y, model(x))           # in the training step
outputs = task.serving_outputs(model(x), names)     # the serving_default signature
task.evaluate(y_test, served_outputs)               # exactly the task's metric names
```

Built-ins: `classification` (one label out of N; the default), `binary` (one probability),
`multilabel` (N independent probabilities), `regression` (one or more real values). A task of
your own is `task.type: my_package.tasks:MyTask`, a subclass of `Task` or of a built-in.
Importing this package does not import TensorFlow, Keras or scikit-learn; only the methods
that need them do.
"""

from tfship.task.base import (
    EXAMPLE_INPUT,
    LATENCY_METRICS,
    Direction,
    MetricResult,
    Task,
    TaskType,
)
from tfship.task.binary import BinaryTask
from tfship.task.classification import ClassificationTask
from tfship.task.multilabel import MultilabelTask
from tfship.task.plots import PlotSpec, render_png
from tfship.task.registry import DEFAULT_TASK, TASKS, load_task, register_task, task_class
from tfship.task.regression import RegressionTask
from tfship.task.slices import (
    DEFAULT_MIN_SLICE_SIZE,
    MISSING_VALUE,
    Slice,
    SliceCheck,
    SlicedMetrics,
    sliced_metrics,
)

__all__ = [
    "DEFAULT_MIN_SLICE_SIZE",
    "DEFAULT_TASK",
    "EXAMPLE_INPUT",
    "LATENCY_METRICS",
    "MISSING_VALUE",
    "TASKS",
    "BinaryTask",
    "ClassificationTask",
    "Direction",
    "MetricResult",
    "MultilabelTask",
    "PlotSpec",
    "RegressionTask",
    "Slice",
    "SliceCheck",
    "SlicedMetrics",
    "Task",
    "TaskType",
    "load_task",
    "register_task",
    "render_png",
    "sliced_metrics",
    "task_class",
]
