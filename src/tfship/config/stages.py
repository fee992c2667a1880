"""Config sections of the shipping half: evaluation gate, serving/deploy, security scan."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from tfship.config.sections import DAY, HOUR, _Section

# The image-classification vocabulary, kept for the default task; the gate's metric names come
# from the configured task (tfship.task.Task.metric_directions), checked in PipelineConfig.
GATE_METRICS: dict[str, Literal["higher", "lower"]] = {
    "accuracy": "higher",
    "macro_f1": "higher",
    "min_class_f1": "higher",
    "min_class_recall": "higher",
    "loss": "lower",
    "p50_latency_ms": "lower",
    "p95_latency_ms": "lower",
    "p50_latency_ms_batch32": "lower",
    "p95_latency_ms_batch32": "lower",
}


class AbsoluteThreshold(_Section):
    """Bounds on the candidate's own value: `{min: 0.95}`, `{max: 50}` or both."""

    min: float | None = Field(None, ge=-1e12, le=1e12)
    max: float | None = Field(None, ge=-1e12, le=1e12)

    @model_validator(mode="after")
    def _one_bound(self) -> AbsoluteThreshold:
        if self.min is None and self.max is None:
            raise ValueError("an absolute threshold needs 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: no model could pass")
        return self


class ChangeThreshold(_Section):
    """How much worse than the champion the candidate may be.

    `max_regression` is in the metric's unit (`relative: false`) or a fraction of the champion's
    value (`relative: true`, e.g. 0.2 = 20 %). 0 means "at least as good as the champion".
    """

    max_regression: float = Field(0.0, ge=0.0, le=1e12)
    relative: bool = False
    better: Literal["higher", "lower"] | None = Field(
        None, description="which direction is better; default: the metric's own (the task's)"
    )


class SliceGate(_Section):
    """Thresholds on every value of one categorical feature: "recall >= 0.8 on every country".

    A slice with fewer than `min_examples` test examples is reported, not gated; a feature with
    no gated slice at all fails the gate (nothing was measured).
    """

    feature: str = Field(min_length=1, max_length=128)
    absolute: dict[str, AbsoluteThreshold] = Field(
        default_factory=dict, description="metric -> {min, max}, checked on every gated slice"
    )
    min_examples: int = Field(30, ge=1, le=10**9)


class DriftBoundsConfig(_Section):
    """How far the data's statistics may move from the champion's before it is drift
    (tfship.data.stream.drift: TFDV's L-infinity distance, unseen-value rate, mean shift in
    reference stds, std ratio, missing-rate change)."""

    linf: float = Field(0.2, gt=0, le=1, description="categorical: L-infinity distance")
    unseen_rate: float = Field(
        0.1, gt=0, le=1, description="categorical: share of values the champion never saw"
    )
    mean_shift: float = Field(0.5, gt=0, le=1e6, description="numeric: |Δmean| / reference std")
    std_ratio: float = Field(2.0, ge=1, le=1e6, description="numeric: max(std/ref, ref/std)")
    missing_rate_change: float = Field(0.1, gt=0, le=1, description="any: |Δ missing rate|")


class DataGate(_Section):
    """Data statistics against the champion's: `drift: report` lists drift in data.drift.json
    and the report; `drift: fail` also fails the gate (exit 7). Schema violations always fail
    the data stage (exit 4)."""

    drift: Literal["report", "fail"] = Field(
        "report", description="fail: drift beyond `bounds` fails the gate"
    )
    bounds: DriftBoundsConfig = Field(default_factory=DriftBoundsConfig)
    schema_changes: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(
        (),
        max_length=1024,
        description="features whose removal or type change against the champion's statistics "
        "is intended: recorded, not a violation (without it a removed feature could never "
        "reach production: every run would stop before training)",
    )


MIN_RUNS_FOR_P95 = 20


class GateConfig(_Section):
    """The evaluation gate: thresholds, champion and mode. No thresholds is an error, not a pass."""

    run_mode: Literal["enabled", "dry_run", "disabled"] = Field(
        "enabled", description="dry_run reports the verdict but never fails the pipeline"
    )
    absolute: dict[str, AbsoluteThreshold] = Field(
        default_factory=dict, description="metric -> {min, max} on the candidate itself"
    )
    change: dict[str, ChangeThreshold] = Field(
        default_factory=dict, description="metric -> allowed regression against the champion"
    )
    champion_repository: str | None = Field(
        None,
        description="model repository holding the champion (<base>/models.config, "
        "<base>/<model_name>/<version>/); default: serving.model_repository",
    )
    champion_label: str = Field("stable", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    latency_runs: int = Field(50, ge=5, le=10000, description="timed calls per batch size")
    first_run: bool = Field(
        False,
        description="the project's first deploy: in CI, gate.change may find no champion "
        "(a reachable repository without the label); remove it once a model is labelled",
    )

    slices: list[SliceGate] = Field(
        default_factory=list,
        max_length=64,
        description="metrics per value of a categorical feature, with thresholds per slice",
    )
    data: DataGate = Field(
        default_factory=DataGate,
        description="data drift against the champion's statistics: report (default) or fail",
    )

    @model_validator(mode="after")
    def _percentiles_need_enough_runs(self) -> GateConfig:
        # The p95 of fewer than 20 calls is (close to) the slowest call: one hiccup of a shared
        # runner decides the verdict, and a change threshold against the champion flaps.
        gated = sorted(
            name
            for name in (*self.absolute, *self.change)
            if name.startswith("p95_") and self.latency_runs < MIN_RUNS_FOR_P95
        )
        if gated:
            raise ValueError(
                f"gate on {', '.join(gated)} with latency_runs {self.latency_runs}: a 95th "
                f"percentile needs at least {MIN_RUNS_FOR_P95} timed calls (below that it is "
                f"the slowest call); raise gate.latency_runs or gate the p50"
            )
        return self


def _check_replicas(value: Any) -> Any:
    """`serving.replicas`: `dns:<host>:<port>`, or 1-256 http(s) REST base URLs."""
    if value is None:
        return None
    if isinstance(value, str):
        m = re.fullmatch(r"dns:([A-Za-z0-9_.-]{1,253}):(\d{1,5})", value)
        if value.startswith("dns:"):
            if not m or not 0 < int(m.group(2)) < 65536:
                raise ValueError(
                    f"replicas {value[:120]!r}: expected dns:<host>:<port>, e.g. "
                    "dns:tfserving-pods.ml-serving.svc.cluster.local:8501"
                )
            return value
        value = (value,)  # one URL
    urls = tuple(value)
    if not 1 <= len(urls) <= 256:
        raise ValueError("replicas: expected 1-256 REST URLs, or dns:<host>:<port>")
    for url in urls:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url) or len(url) > 2048:
            raise ValueError(
                f"replicas: {url[:120]!r} is not a REST base URL (http(s)://host:port) nor "
                "dns:<host>:<port>"
            )
    if len(set(urls)) != len(urls):
        raise ValueError("replicas: a URL is listed twice")
    return urls


# `serving.replicas` and `serving.environments.<name>.replicas`: one type, checked the same way
Replicas = Annotated[str | tuple[str, ...] | None, AfterValidator(_check_replicas)]


def _replicas_alone(section: Any, prefix: str) -> Any:
    """Replicas make the deploy file-driven: no gRPC reload, no single REST URL beside them."""
    if section.replicas is not None:
        both = [f"{prefix}{n}" for n in ("rest_url", "grpc_target") if getattr(section, n)]
        if both:
            raise ValueError(
                f"{prefix}replicas is set, so deploys are file-driven (models.config in the "
                f"repository, every replica waited for over REST, no HandleReloadConfigRequest): "
                f"unset {' and '.join(both)}"
            )
    return section


class ServingEnvironment(_Section):
    """Where one deploy target (`tfship deploy --to <name>`) lives; unset fields fall back to
    the `serving` section's own values."""

    model_repository: str | None = Field(None, description="path or s3://bucket/prefix")
    server_model_repository: str | None = None
    rest_url: str | None = Field(None, description="TF Serving REST base, e.g. http://tfs:8501")
    grpc_target: str | None = Field(None, description="TF Serving gRPC host:port (config reloads)")
    replicas: Replicas = Field(
        None,
        description="every TF Serving replica (file-driven deploy): REST URLs, or "
        "dns:<host>:<port> for every address the name resolves to",
    )

    @model_validator(mode="after")
    def _file_driven(self) -> Any:
        return _replicas_alone(self, "")


class ServingConfig(_Section):
    """Model repository and TF Serving (publish, deploy, promote, rollback, validate)."""

    model_repository: str = Field("models", description="path or s3://bucket/prefix")
    server_model_repository: str | None = Field(
        None,
        description="the repository as the model server sees it, used for base_path in "
        "models.config (e.g. /models in the compose container); default: model_repository",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, ...)")
    rest_url: str | None = Field(None, description="TF Serving REST base; unset = offline deploy")
    grpc_target: str | None = Field(None, description="TF Serving gRPC host:port")
    replicas: Replicas = Field(
        None,
        description="every TF Serving replica; set = file-driven deploy (models.config only, "
        "no gRPC reload, every replica waited for): REST URLs, or dns:<host>:<port> for every "
        "address the name resolves to (a headless Service)",
    )
    request_timeout_seconds: float = Field(10.0, gt=0, le=HOUR)
    connect_retries: int = Field(3, ge=0, le=20, description="retries on connection errors")
    retry_backoff_seconds: float = Field(0.5, ge=0, le=600.0)
    load_deadline_seconds: float = Field(
        600.0, gt=0, le=DAY, description="wait for AVAILABLE; allow for TF Serving's load retries"
    )
    poll_interval_seconds: float = Field(0.5, gt=0, le=600.0)
    retention: int = Field(
        3, ge=2, le=10_000, description="versions kept on disk (labelled ones always)"
    )
    tolerance: float | None = Field(
        None, gt=0, le=1.0, description="default: the manifest's tolerance (<= 1)"
    )
    latency_requests: int = Field(50, ge=1, le=10000, description="`validate` latency sample")
    allow_ungated: bool = Field(False, description="deploy without evaluation/gate.json")
    environments: dict[str, ServingEnvironment] = Field(
        default_factory=lambda: {
            "staging": ServingEnvironment(),
            "production": ServingEnvironment(),
        },
        max_length=64,
    )

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, value: dict[str, ServingEnvironment]) -> Any:
        bad = [k[:80] for k in value if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", k)]
        if bad:
            raise ValueError(f"environment name(s) {bad}: expected 1-32 of A-Z a-z 0-9 _ -")
        return value

    @model_validator(mode="after")
    def _file_driven(self) -> Any:
        return _replicas_alone(self, "serving.")


class ScanSeverity(StrEnum):
    """Trivy's severities, lowest first (the order is the gate's order)."""

    UNKNOWN = "UNKNOWN"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(ScanSeverity).index(self)


class ScanScanner(StrEnum):
    VULN = "vuln"
    SECRET = "secret"
    MISCONFIG = "misconfig"


class ScanConfig(_Section):
    """Security scanning with Trivy (`tfship scan`, and the scan stage of `tfship run`)."""

    enabled: bool = Field(True, description="run the scan stage in `tfship run`")
    fail_on: ScanSeverity = Field(
        ScanSeverity.CRITICAL,
        description="vulnerabilities and secrets at or above this severity fail (exit 10)",
    )
    # Misconfigurations are the project's own files (Dockerfiles, manifests, workflows), fixed
    # in the same merge request, and Trivy rates "runs as root" (DS-0002) HIGH: the CRITICAL
    # that suits third-party CVEs would let it through.
    fail_on_config: ScanSeverity = Field(
        ScanSeverity.HIGH,
        description="misconfigurations (`tfship scan config`) at or above this severity fail",
    )
    report: ScanSeverity = Field(
        ScanSeverity.HIGH, description="lowest severity listed in the reports and summary"
    )
    allowlist: Path = Field(
        Path(".trivyignore.yaml"),
        description="Trivy YAML ignore file; every entry needs `statement` and `expired_at`",
    )
    timeout_seconds: int = Field(
        900,
        ge=10,
        le=int(6 * HOUR),
        description="trivy --timeout (TF images exceed its 5 min default)",
    )
    cache_dir: Path | None = Field(
        None, description="trivy --cache-dir (DB, checks); default ~/.cache/trivy"
    )
    offline: bool = Field(
        False,
        description="never download: --skip-db-update --skip-java-db-update --offline-scan"
        " --skip-check-update (the DB must already be in cache_dir)",
    )
    scanners: tuple[ScanScanner, ...] = Field(
        (ScanScanner.VULN, ScanScanner.SECRET), min_length=1, description="for `image` and `fs`"
    )
    ignore_unfixed: bool = Field(False, description="drop vulnerabilities that have no fix yet")
    skip_dirs: tuple[Annotated[str, Field(min_length=1, max_length=4096)], ...] = Field(
        (".git", ".venv", "venv", "node_modules", "runs", "build", ".gitlab-ci-local", ".cache"),
        max_length=256,
        description="trivy --skip-dirs for `fs` and `config` scans",
    )

    @model_validator(mode="before")
    @classmethod
    def _upper_severities(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("fail_on", "fail_on_config", "report"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].upper()
        return data

    @model_validator(mode="after")
    def _report_covers_gate(self) -> ScanConfig:
        for name in ("fail_on", "fail_on_config"):
            if self.report.rank > getattr(self, name).rank:
                raise ValueError(
                    f"scan.report ({self.report.value}) must not be above scan.{name} "
                    f"({getattr(self, name).value}): findings that fail the scan must appear in "
                    "its report"
                )
        return self

    def fails(self, kind: str, severity: ScanSeverity) -> bool:
        """Does a finding of this kind and severity fail the scan?"""
        limit = self.fail_on_config if kind == "misconfiguration" else self.fail_on
        return severity.rank >= limit.rank
