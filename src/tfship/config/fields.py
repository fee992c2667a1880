"""Which configuration fields decide whether a model ships: the one declared classification.

DESIGN.md's trust model: CI/CD variables may say *where* (URLs, buckets, names of places) and
*how* (sizes, timeouts, logging), but never loosen *whether*. A VERDICT field changes the rule a
model is judged by, what counts as a finding, or how much of the model is checked; in CI it may
only come from the committed pipeline.yaml, unless a person started the job
(tfship.config.trust). Every field of PipelineConfig is listed here with its reason;
tests/security/test_verdict.py fails when a field is added without being classified.

Classification is per `section.field`: a deeper key (`gate.absolute.accuracy.min`) belongs to
its field (`gate.absolute`), so a whole-mapping override and a single-bound override are
judged alike.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VERDICT = "verdict"  # decides whether a model ships: committed only in CI
    WHERE = "where"  # a location or name of something outside tfship: any source
    HOW = "how"  # how the work is done (sizes, timeouts, logging): any source


V, W, H = Role.VERDICT, Role.WHERE, Role.HOW

FIELDS: dict[str, tuple[Role, str]] = {
    "version": (H, "schema version; only 1 exists"),
    # project, run
    "project.name": (W, "names artifacts and the backup prefix"),
    "project.model_name": (
        V,
        "selects the champion the change thresholds compare with, and which served model a "
        "deploy replaces: another name is a first run with no regression check",
    ),
    "run.runs_dir": (W, "where run directories go"),
    "run.run_id": (W, "names this run's directory"),
    "run.seed": (H, "any seed gives a held-out test split; it sets no rule"),
    # task: what is measured and how (threshold, positive label) decides every metric
    "task.type": (V, "which metrics exist and how they are computed"),
    "task.options": (V, "decision threshold, positive label, top-k: they change the metrics"),
    # data: its location is a 'where' (a bucket or path per environment); its fingerprint and
    # the source of data.path are recorded in data.json, the manifest and gate.json.
    "data.source": (W, "kind of the data location"),
    "data.path": (W, "data location (a bucket or path per environment)"),
    "data.image_size": (H, "model input shape"),
    "data.channels": (H, "model input shape"),
    "data.label": (
        V,
        "which column is the truth the gate scores against (a feature's copy passes)",
    ),
    "data.features": (
        V,
        "what the model may read: a copy of the label declared as a feature passes any gate",
    ),
    "data.loader": (V, "code that produces the test set the gate scores on"),
    "data.tfrecord_image_key": (H, "how to read the data"),
    "data.validation_fraction": (H, "training-time split; the gate never reads it"),
    "data.test_fraction": (V, "size of the held-out set the gate judges the model on"),
    "data.limit": (V, "caps the examples, and with them the test set the gate judges on"),
    "data.cache": (H, "tf.data caching"),
    "data.shuffle_buffer": (H, "tf.data shuffling"),
    "data.stream": (
        V,
        "one block (classified as a whole, like gate.absolute): its hash key/buckets or "
        "explicit test location choose the test set the gate judges on, on_error: skip drops "
        "records from it, max_eval_examples bounds it; a per-environment S3 endpoint comes "
        "from AWS_ENDPOINT_URL_S3, and data.path stays a 'where'",
    ),
    # model, train, checkpoints, backup: they shape the model the gate then judges
    "model.builder": (H, "the model under judgement, not the judgement"),
    "model.options": (H, "the model under judgement, not the judgement"),
    "train.strategy": (H, "distribution strategy"),
    "train.cpu_logical_devices": (H, "CPU device split"),
    "train.epochs": (H, "training length; the gate judges the result"),
    "train.per_replica_batch_size": (H, "batch size"),
    "train.learning_rate": (H, "optimiser setting"),
    "train.scale_learning_rate": (H, "optimiser setting"),
    "train.optimizer": (H, "optimiser setting"),
    "train.lr_schedule": (H, "optimiser setting"),
    "train.weight_decay": (H, "optimiser setting"),
    "train.max_steps": (H, "training length; the gate judges the result"),
    "train.log_every_steps": (H, "logging"),
    "train.steps_per_execution": (H, "steps per compiled call"),
    "train.progress": (H, "progress display"),
    "checkpoint.dir": (W, "checkpoint location"),
    "checkpoint.every_steps": (H, "checkpoint cadence"),
    "checkpoint.every_seconds": (H, "checkpoint cadence"),
    "checkpoint.keep": (H, "generations kept"),
    "checkpoint.best_metric": (H, "which checkpoint is exported; the gate judges the export"),
    "checkpoint.best_mode": (H, "which checkpoint is exported; the gate judges the export"),
    "backup.enabled": (H, "checkpoint backup on/off"),
    "backup.url": (W, "backup location"),
    "backup.prefix": (W, "backup location"),
    "backup.endpoint_url": (W, "object-store endpoint"),
    "backup.keep": (H, "generations kept remotely"),
    "backup.every_seconds": (H, "upload cadence"),
    "backup.include_best": (H, "what is backed up"),
    "backup.restore": (H, "restore on start"),
    "backup.request_timeout_seconds": (H, "timeout"),
    "backup.upload_timeout_seconds": (H, "timeout"),
    "backup.preempt_timeout_seconds": (H, "timeout"),
    # export
    "export.version": (W, "names the exported version"),
    "export.version_scheme": (W, "how versions are named"),
    "export.golden_requests": (V, "how many golden requests the export must reproduce"),
    "export.warmup_requests": (H, "TF Serving warmup records"),
    "export.tolerance": (V, "how far the C++ loader's outputs may differ and still pass"),
    "export.image_digest": (H, "recorded in the manifest; decides nothing"),
    # serving
    "serving.model_repository": (W, "model repository location (per environment)"),
    "serving.server_model_repository": (W, "the repository as the server sees it"),
    "serving.s3_endpoint_url": (W, "object-store endpoint"),
    "serving.rest_url": (W, "TF Serving location"),
    "serving.grpc_target": (W, "TF Serving location"),
    "serving.replicas": (W, "TF Serving locations: every replica a deploy waits for"),
    "serving.request_timeout_seconds": (H, "timeout"),
    "serving.connect_retries": (H, "retries"),
    "serving.retry_backoff_seconds": (H, "retries"),
    "serving.load_deadline_seconds": (H, "deadline; missing it fails the deploy"),
    "serving.poll_interval_seconds": (H, "polling"),
    "serving.retention": (H, "versions kept on disk; labelled ones always"),
    "serving.tolerance": (V, "how far served outputs may differ from the golden ones"),
    "serving.latency_requests": (H, "size of validate's latency sample (reported)"),
    "serving.allow_ungated": (V, "deploys a model no gate passed"),
    "serving.environments": (W, "deploy target locations"),
    # gate
    "gate.run_mode": (V, "enabled / dry_run / disabled: whether the verdict binds"),
    "gate.absolute": (V, "thresholds on the candidate"),
    "gate.change": (V, "thresholds against the champion"),
    "gate.slices": (V, "thresholds per slice of a feature"),
    "gate.data": (V, "whether data drift fails the gate, and the bounds that define drift"),
    "gate.champion_repository": (
        W,
        "location of the champion's repository, set per project as a protected variable; an "
        "empty or missing one is recorded in gate.json (first_run / no_repository) and the "
        "committed absolute thresholds still apply",
    ),
    "gate.champion_label": (V, "which labelled version is the champion"),
    "gate.latency_runs": (H, "how long latency is measured; it sets no threshold"),
    "gate.first_run": (V, "lets the change thresholds find no champion in CI"),
    # scan
    "scan.enabled": (V, "whether `tfship run` scans at all"),
    "scan.fail_on_config": (V, "what counts as a failing misconfiguration"),
    "scan.fail_on": (V, "severity that fails the scan"),
    "scan.report": (H, "what is listed; never above fail_on"),
    "scan.allowlist": (V, "which accepted risks hide findings"),
    "scan.timeout_seconds": (H, "a timeout fails the scan (exit 11), never passes it"),
    "scan.cache_dir": (W, "vulnerability DB location"),
    "scan.offline": (V, "skips the DB update: a stale DB reports fewer findings"),
    "scan.scanners": (V, "what is looked for"),
    "scan.ignore_unfixed": (V, "drops vulnerabilities from the verdict"),
    "scan.skip_dirs": (V, "drops directories from the verdict"),
}

VERDICT_FIELDS: frozenset[str] = frozenset(k for k, (role, _) in FIELDS.items() if role is V)


def field_of(key: str) -> str:
    """The classified field a dotted key belongs to: gate.absolute.accuracy.min -> gate.absolute."""
    return ".".join(key.split(".")[:2])


def is_verdict(key: str) -> bool:
    return field_of(key) in VERDICT_FIELDS
