"""ci/gpu-preflight, run for real against a stand-in `nvidia-smi` on PATH (a shell script printing
canned answers to the queries the script makes) and a stand-in `tensorflow` module on PYTHONPATH
(the five calls the script makes, answering from a canned build info). One case imports the real
TensorFlow of this environment (a CPU build) to hold the script to TF's real API.

The canned values are real ones: nvidia-smi's banner and `--query-gpu` CSV as drivers print them,
and TensorFlow's build info as `tf.sysconfig.get_build_info()` returns it on Linux GPU wheels
(`cuda_version` with a patch level since the hermetic CUDA builds, e.g. "12.5.1"; `cudnn_version`
the major; `cuda_compute_capabilities` as cubins `sm_XY` plus PTX for the newest, `compute_XY`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "gpu-preflight"

# TF 2.18+ Linux GPU wheels: hermetic CUDA 12.5.1, cuDNN 9.
TF_ARCHS = ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]

BANNER = """Fri Nov 28 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
"""

FAKE_TF = '''"""Stand-in for the TensorFlow calls ci/gpu-preflight makes; answers from spec.json."""
import contextlib
import json
import pathlib

_SPEC = json.loads((pathlib.Path(__file__).with_name("spec.json")).read_text())
if _SPEC.get("import_error"):
    raise ImportError(_SPEC["import_error"])
__version__ = _SPEC["version"]


class _Device:
    def __init__(self, index):
        self.name = f"/physical_device:GPU:{index}"
        self.device_type = "GPU"


class _Tensor:
    def __init__(self, device):
        self.device = device

    def __float__(self):
        return 0.0


_placement = ["/job:localhost/replica:0/task:0/device:CPU:0"]


class sysconfig:
    @staticmethod
    def get_build_info():
        return dict(_SPEC["build_info"])


class config:
    @staticmethod
    def list_physical_devices(kind):
        return [_Device(i) for i in range(_SPEC["gpus_seen"])] if kind == "GPU" else []

    class experimental:
        @staticmethod
        def get_device_details(device):
            capability = _SPEC.get("tf_compute_capability")
            return {"device_name": "from TensorFlow", "compute_capability": tuple(capability)} \\
                if capability else {}


@contextlib.contextmanager
def device(name):
    index = name.rsplit(":", 1)[-1]
    gpu = f"/job:localhost/replica:0/task:0/device:GPU:{index}"
    _placement.append(_SPEC.get("placed_on") or gpu)
    yield
    _placement.pop()


def ones(shape):
    return _Tensor(_placement[-1])


def reduce_sum(tensor):
    return _Tensor(tensor.device)


class nn:
    @staticmethod
    def conv2d(images, kernels, strides, padding):
        if _SPEC.get("conv_error"):
            raise RuntimeError(_SPEC["conv_error"])
        return _Tensor(_placement[-1])
'''


@dataclass
class Runner:
    """One GPU runner as the script sees it: the driver's answers and TensorFlow's."""

    driver_cuda: str | None = "12.5"
    tf_cuda: str | None = "12.5.1"
    compute_caps: list[str] = field(default_factory=lambda: ["9.0"])
    gpus_seen: int = 1
    archs: list[str] | None = field(default_factory=lambda: list(TF_ARCHS))
    cuda_build: bool = True
    driver: str = "555.42.06"
    names: list[str] | None = None
    compute_cap_query_supported: bool = True
    tf_compute_capability: list[int] | None = None
    conv_error: str = ""
    placed_on: str = ""
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES of the job, None = unset

    def build_info(self) -> dict:
        if not self.cuda_build:
            return {"is_cuda_build": False, "is_rocm_build": False, "is_tensorrt_build": False}
        info: dict = {"cpu_compiler": "clang 18", "is_cuda_build": True, "cudnn_version": "9"}
        if self.tf_cuda is not None:
            info["cuda_version"] = self.tf_cuda
        if self.archs is not None:
            info["cuda_compute_capabilities"] = self.archs
        return info


def _executable(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def _path(tmp_path: Path, bin_dir: Path) -> str:
    """PATH with the stand-ins and only the tools the script uses, so a real nvidia-smi on the
    machine running the tests cannot answer instead of the stand-in."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for name in ("bash", "cat", "head", "sed"):
        if not (tools / name).exists():
            (tools / name).symlink_to(shutil.which(name))
    return f"{bin_dir}:{tools}"


def stand_in_nvidia_smi(bin_dir: Path, runner: Runner) -> None:
    names = runner.names or ["NVIDIA H100 80GB HBM3"] * len(runner.compute_caps)
    (bin_dir / "banner.txt").write_text(
        BANNER.format(driver=runner.driver, cuda=runner.driver_cuda or "N/A")
    )
    rows = [f"{i}, {name}, {runner.driver}, 81559 MiB" for i, name in enumerate(names)]
    (bin_dir / "gpus.csv").write_text("".join(row + "\n" for row in rows))
    (bin_dir / "caps.csv").write_text("".join(cap + "\n" for cap in runner.compute_caps))
    caps = (
        f"cat {bin_dir}/caps.csv"
        if runner.compute_cap_query_supported
        # what a driver older than 510 answers
        else "echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2"
    )
    _executable(
        bin_dir / "nvidia-smi",
        f"""case "$*" in
  "") cat {bin_dir}/banner.txt ;;
  "--query-gpu=index,name,driver_version,memory.total --format=csv,noheader")
    cat {bin_dir}/gpus.csv ;;
  "--query-gpu=compute_cap --format=csv,noheader") {caps} ;;
  *) echo "stand-in nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
""",
    )


def preflight(
    tmp_path: Path,
    runner: Runner | None,
    expected: str = "1",
    fake_tf: dict | None = None,
    real_tf: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ci/gpu-preflight with `runner`'s nvidia-smi (None: no nvidia-smi on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env["PATH"] = _path(tmp_path, bin_dir)
    env["EXPECTED_GPUS"] = expected
    env["PYTHON"] = sys.executable
    if runner is not None and runner.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = runner.visible_devices
    if runner is not None:
        stand_in_nvidia_smi(bin_dir, runner)
        if not real_tf:
            package = tmp_path / "site" / "tensorflow"
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").write_text(FAKE_TF)
            spec = {
                "version": "2.21.0",
                "build_info": runner.build_info(),
                "gpus_seen": runner.gpus_seen,
                "tf_compute_capability": runner.tf_compute_capability,
                "conv_error": runner.conv_error,
                "placed_on": runner.placed_on,
                **(fake_tf or {}),
            }
            (package / "spec.json").write_text(json.dumps(spec))
            env["PYTHONPATH"] = str(tmp_path / "site")
    return subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


# (case, runner, EXPECTED_GPUS) → exit 0, and what the log must say.
HEALTHY = [
    (
        "driver CUDA 12.5 runs TF built with 12.5.1: the patch level is ignored",
        Runner(driver_cuda="12.5", tf_cuda="12.5.1"),
        "1",
        "CUDA 12.5.1, cuDNN 9",
    ),
    (
        "a driver for a newer CUDA major runs an older build",
        Runner(driver_cuda="13.0", tf_cuda="12.5.1"),
        "1",
        "driver CUDA 13.0",
    ),
    (
        "versions compare as numbers, not text: 12.10 is newer than 12.9",
        Runner(driver_cuda="12.10", tf_cuda="12.9"),
        "1",
        "ok",
    ),
    (
        "an sm_86 GPU runs sm_80 cubins (same major)",
        Runner(compute_caps=["8.6"], names=["NVIDIA RTX A6000"]),
        "1",
        "ok",
    ),
    (
        "two GPUs seen by TensorFlow satisfy EXPECTED_GPUS=2",
        Runner(compute_caps=["8.0", "8.0"], gpus_seen=2),
        "2",
        "2 GPU(s) on the host",
    ),
    (
        "a host GPU outside CUDA_VISIBLE_DEVICES is not judged",
        Runner(
            compute_caps=["3.7", "9.0"],
            names=["Tesla K80", "NVIDIA H100 80GB HBM3"],
            visible_devices="1",
        ),
        "1",
        "ok",
    ),
    (
        "more GPUs than expected is fine",
        Runner(compute_caps=["9.0", "9.0"], gpus_seen=2),
        "1",
        "ok",
    ),
]


@pytest.mark.parametrize(
    ("case", "runner", "expected", "said"), HEALTHY, ids=[case for case, *_ in HEALTHY]
)
def test_a_healthy_runner_passes(
    tmp_path: Path, case: str, runner: Runner, expected: str, said: str
) -> None:
    result = preflight(tmp_path, runner, expected)
    assert result.returncode == 0, result.stderr
    assert said in result.stdout
    assert result.stdout.rstrip().endswith("gpu-preflight: ok")


# (case, runner, EXPECTED_GPUS) → exit 8, with these phrases in the message (what and the fix).
BROKEN = [
    (
        "a driver older than TF's CUDA fails naming both versions",
        Runner(driver_cuda="12.4", tf_cuda="12.5.1"),
        "1",
        [
            "supports CUDA up to 12.4",
            "built with CUDA 12.5.1",
            "CUDA 12.5 or newer",
            "fix: upgrade",
        ],
    ),
    (
        "a driver a CUDA major behind fails",
        Runner(driver_cuda="11.8", tf_cuda="12.3"),
        "1",
        ["supports CUDA up to 11.8", "built with CUDA 12.3"],
    ),
    (
        "a compute capability below every kernel fails",
        Runner(compute_caps=["3.7"], names=["Tesla K80"], gpus_seen=0),
        "1",
        ["GPU 0 (Tesla K80) has compute capability 3.7", "sm_60", "cannot use this GPU"],
    ),
    (
        "a cubin does not run across majors: 7.5 has no sm_7x it can use below it",
        Runner(compute_caps=["7.5"], archs=["sm_80", "sm_90"]),
        "1",
        ["compute capability 7.5"],
    ),
    (
        "an arch-specific sm_90a cubin does not run on a 10.0 GPU",
        Runner(compute_caps=["10.0"], archs=["sm_90a"]),
        "1",
        ["compute capability 10.0"],
    ),
    (
        "TensorFlow seeing no GPU fails",
        Runner(gpus_seen=0),
        "1",
        ["TensorFlow sees 0 GPU(s), EXPECTED_GPUS=1", "CUDA_VISIBLE_DEVICES"],
    ),
    (
        "TensorFlow seeing fewer GPUs than expected fails",
        Runner(compute_caps=["9.0", "9.0"], gpus_seen=1),
        "2",
        ["TensorFlow sees 1 GPU(s), EXPECTED_GPUS=2"],
    ),
    (
        "fewer GPUs on the host than expected fails",
        Runner(compute_caps=["9.0"], gpus_seen=1),
        "2",
        ["nvidia-smi shows 1 GPU(s) on this runner, EXPECTED_GPUS=2"],
    ),
    (
        "a CPU-only TensorFlow fails",
        Runner(cuda_build=False, gpus_seen=0),
        "1",
        ["is not a CUDA build", "EXPECTED_GPUS=0"],
    ),
    (
        "a cuDNN TensorFlow cannot load fails with TF's own message",
        Runner(
            conv_error="Loaded runtime CuDNN library: 8.9.7 but source was compiled with: 9.3.0"
        ),
        "1",
        ["convolution on GPU 0 failed", "Loaded runtime CuDNN library: 8.9.7", "cuDNN must match"],
    ),
    (
        "a convolution that silently ran on the CPU fails",
        Runner(placed_on="/job:localhost/replica:0/task:0/device:CPU:0"),
        "1",
        ["meant for GPU 0 ran on /job:localhost/replica:0/task:0/device:CPU:0"],
    ),
]


@pytest.mark.parametrize(
    ("case", "runner", "expected", "phrases"), BROKEN, ids=[case for case, *_ in BROKEN]
)
def test_a_runner_that_cannot_train_fails_with_what_to_fix(
    tmp_path: Path, case: str, runner: Runner, expected: str, phrases: list[str]
) -> None:
    result = preflight(tmp_path, runner, expected)
    assert result.returncode == 8, result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in:\n{result.stderr}"
    assert "fix:" in result.stderr
    assert "gpu-preflight: ok" not in result.stdout


def test_every_failure_is_reported_not_only_the_first(tmp_path: Path) -> None:
    runner = Runner(driver_cuda="12.2", compute_caps=["3.7"], gpus_seen=0)
    result = preflight(tmp_path, runner)
    assert result.returncode == 8
    assert "supports CUDA up to 12.2" in result.stderr
    assert "compute capability 3.7" in result.stderr
    assert "TensorFlow sees 0 GPU(s)" in result.stderr
    assert result.stderr.count("fix:") == 3


# What the script cannot check is said, never silently passed over.
DEGRADED = [
    (
        "a build info without compute capabilities skips that check and says so",
        Runner(archs=None),
        "lists no cuda_compute_capabilities: compute capability not checked",
    ),
    (
        "a banner without a CUDA version skips the driver check and says so",
        Runner(driver_cuda=None),
        "names no CUDA version: driver/CUDA not checked",
    ),
    (
        "a build info without cuda_version skips the driver check and says so",
        Runner(tf_cuda=None),
        "no usable cuda_version",
    ),
    (
        "a GPU newer than every cubin runs TF's PTX, with a JIT warning",
        Runner(compute_caps=["12.0"], names=["NVIDIA RTX PRO 6000"]),
        "JIT-compiles its PTX",
    ),
]


@pytest.mark.parametrize(("case", "runner", "said"), DEGRADED, ids=[c for c, *_ in DEGRADED])
def test_what_cannot_be_checked_passes_with_a_warning(
    tmp_path: Path, case: str, runner: Runner, said: str
) -> None:
    result = preflight(tmp_path, runner)
    assert result.returncode == 0, result.stderr
    assert "gpu-preflight: warning: " in result.stderr
    assert said in result.stderr


# A driver older than 510 has no compute_cap query field: TensorFlow's device details decide.
FALLBACK = [
    ("a supported capability from TensorFlow passes", [8, 0], 0),
    ("an unsupported capability from TensorFlow fails", [5, 2], 8),
]


@pytest.mark.parametrize(("case", "capability", "code"), FALLBACK, ids=[c for c, *_ in FALLBACK])
def test_without_the_compute_cap_query_tensorflow_reports_the_capability(
    tmp_path: Path, case: str, capability: list[int], code: int
) -> None:
    runner = Runner(compute_cap_query_supported=False, tf_compute_capability=capability)
    result = preflight(tmp_path, runner)
    assert result.returncode == code, result.stdout + result.stderr
    if code:
        assert "GPU 0 (from TensorFlow) has compute capability 5.2" in result.stderr


# (case, nvidia-smi present, EXPECTED_GPUS, stand-in TF override) → exit code, message.
SETUP = [
    ("EXPECTED_GPUS=0 is a CPU run: nothing is checked", False, "0", None, 0, "nothing to check"),
    ("a non-numeric EXPECTED_GPUS is a configuration error", True, "one", None, 3, "not a number"),
    ("no nvidia-smi means no driver in the job", False, "1", None, 8, "nvidia-smi not found"),
    (
        "a TensorFlow that does not import fails",
        True,
        "1",
        {"import_error": "libcudart.so.12: cannot open shared object file"},
        8,
        "TensorFlow does not import",
    ),
]


@pytest.mark.parametrize(
    ("case", "smi", "expected", "fake_tf", "code", "said"), SETUP, ids=[c for c, *_ in SETUP]
)
def test_the_job_setup_is_checked_before_the_gpus(
    tmp_path: Path,
    case: str,
    smi: bool,
    expected: str,
    fake_tf: dict | None,
    code: int,
    said: str,
) -> None:
    result = preflight(tmp_path, Runner() if smi else None, expected, fake_tf=fake_tf)
    assert result.returncode == code
    assert said in result.stdout + result.stderr


def test_a_driver_that_does_not_answer_fails_with_its_message(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(
        bin_dir / "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\n'
        "exit 9\n",
    )
    env = {**os.environ, "PATH": _path(tmp_path, bin_dir), "EXPECTED_GPUS": "1"}
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 8
    assert "couldn't communicate with the NVIDIA driver" in result.stderr
    assert "fix:" in result.stderr


def test_the_real_tensorflow_cpu_build_is_refused_for_a_gpu_job(tmp_path: Path) -> None:
    """The real tf.sysconfig / tf.config calls, on this environment's tensorflow-cpu."""
    pytest.importorskip("tensorflow")
    result = preflight(tmp_path, Runner(), real_tf=True)
    assert result.returncode == 8, result.stdout + result.stderr
    assert "is not a CUDA build" in result.stderr
    assert "CUDA build False" in result.stdout
