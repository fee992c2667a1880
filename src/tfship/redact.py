"""Keep credentials out of everything tfship writes: logs, results, deploy records, reports.

A URL may carry a password (`https://user:token@host/`), a presigned query string
(`?X-Amz-Signature=...`) or a token parameter; a header, a JSON document or a command line may
carry `Authorization: Bearer ...` or `"password": "..."`; CI variables hold tokens. Everything
that leaves the process (stderr, `--output json`, deploy.json, the deploy log, manifests,
report.md) goes through `redact_url` / `redact_text`, so a value is hidden by its shape, not by
remembering every place it could appear. The values of secret environment variables (by the
list below or by a name ending in TOKEN, SECRET, PASSWORD, ...) are also hidden verbatim.

`redacting_logs()` applies the same to every log record of the process (tfship's and
third-party), to warnings and to uncaught exceptions, and keeps the loggers that print HTTP
headers and signed URLs (botocore, urllib3, ...) at WARNING even under `-v`.

Standard library only: the backup agent imports this without TensorFlow or pydantic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from typing import IO, Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "***"

# The last word of a name that holds a credential: AWS_SECRET_ACCESS_KEY, x-amz-security-token,
# PRIVATE-TOKEN, client_secret, MINIO_SECRET_KEY, AccountKey, credentials, Authorization, ...
# Names only *ending* in it, so `max_tokens`, `tokenizer` or a SavedModel `signature` stay
# readable. (Not "pwd": the shell's PWD holds the working directory.)
_SECRET_WORD = (
    r"(?:secret|token|password|passwd|passphrase|jwt|api[_-]?key|apikey|access[_-]?key|"
    r"secret[_-]?key|account[_-]?key|private[_-]?key|session[_-]?key|signing[_-]?key|"
    r"credentials?|auth|authorization|cookie|x-amz-signature|x-goog-signature)"
)
_NAME = rf"[\w.-]*{_SECRET_WORD}"
_SECRET_NAME = re.compile(f"(?i){_NAME}")
# Query parameters whose value is a credential besides those (presigned URLs, SAS, API keys).
_SECRET_PARAM = rf"(?:x-amz-credential|x-goog-credential|signature|sig|key|code|{_NAME})"

# scheme://user:password@host. The password may itself contain '@', and, unencoded, '/', '?'
# or '#' (AWS secret keys hold '/'): then `user:` comes first and what follows the ':' is not a
# port (`host:5000/image@sha256:...` is a path, not a password).
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^\s/?#'\"<>]+|[^\s/?#'\"<>@:]*:(?!\d*(?:[/?#]|$))[^\s'\"<>]*)@"
)
# ?name=value / &name=value / #access_token=value in free text.
_QUERY_SECRET = re.compile(rf"(?i)(?P<pre>[?&;#](?:amp;)?{_SECRET_PARAM}=)(?P<value>[^&\s#'\"<>]*)")
# A value never worth masking: a variable reference or a placeholder.
_PLACEHOLDER = r"(?![$<{%]|\*\*\*)"
_AUTH_SCHEME = r"(?:(?:Bearer|Basic|Token|Digest|Negotiate|OAuth|AWS4-HMAC-SHA256|Splunk)\s+)?"
# name: value, name=value, "name": "value", 'Name': b'value', name => value (free text, JSON,
# YAML, Python reprs of header dicts as botocore logs them).
_KV_SECRET = re.compile(
    rf"(?i)(?P<key>(?<![\w.-]){_NAME}(?![\w-])['\"]?\s*(?:=>|[:=])\s*)"
    rf"(?P<value>b?\"{_PLACEHOLDER}(?:[^\"\\\n]|\\.)*\"|b?'{_PLACEHOLDER}(?:[^'\\\n]|\\.)*'"
    rf"|{_PLACEHOLDER}{_AUTH_SCHEME}[^\s'\",;&)}}\]]+)"
)
# --password hunter2 / --token=... on a logged command line.
_FLAG_SECRET = re.compile(rf"(?i)(?P<key>--{_NAME}(?:\s+|=))(?P<value>{_PLACEHOLDER}\S+)")
# AWS SigV4 signatures in a header or a canonical request.
_SIGV4 = re.compile(r"(?P<key>\bSignature=)(?P<value>[0-9a-fA-F]{40,})")
# Credentials recognisable by shape alone, wherever they appear.
_TOKEN_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"  # AWS access key ids (they name the account)
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bgl(?:pat|oas|dt|rt|rtr|cbt|ptt|ft|imt|agent|soat|ffct|wt)-[\w-]{16,}"  # GitLab tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]*"  # JWTs (OIDC id tokens, CI_JOB_JWT)
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"
)

# Environment variables whose values are secrets wherever they show up verbatim (besides every
# variable whose name ends in a _SECRET_WORD: GITLAB_TOKEN, CI_REGISTRY_PASSWORD, ...).
SECRET_VARIABLES: tuple[str, ...] = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "TFSHIP_GITLAB_TOKEN",
    "CI_JOB_TOKEN",
    "CI_REGISTRY_PASSWORD",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
)
# Real credentials are long; masking every occurrence of a short value ("true", "testing")
# would mangle unrelated text.
_MIN_SECRET_LENGTH = 8


def _secret_values(environ: Mapping[str, str] | None) -> list[str]:
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if not value or len(value) < _MIN_SECRET_LENGTH:
            continue
        if name in SECRET_VARIABLES or _SECRET_NAME.fullmatch(name):
            # The value as it is, and as it looks inside a URL.
            found.update({value, quote(value, safe=""), quote_plus(value)})
    return sorted(found, key=len, reverse=True)


def _mask_kv(match: re.Match[str]) -> str:
    value = match["value"]
    # "secret: GitHub token for ..." is a description, not a credential: after a colon, one
    # plain word that a phrase continues is left alone (a '=' value is always masked).
    following = match.string[match.end() : match.end() + 2]
    if match["key"].rstrip().endswith(":") and value.isalpha() and re.match(r"\s\w", following):
        return match[0]
    prefix = "b" if value[:1] == "b" and value[1:2] in "'\"" else ""
    quote_char = value[len(prefix) : len(prefix) + 1]
    if quote_char in ("'", '"'):
        return f"{match['key']}{prefix}{quote_char}{MASK}{quote_char}"
    return f"{match['key']}{MASK}"


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Free text (a log line, an error message) with every credential shape masked."""
    for value in _secret_values(environ):
        text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['pre']}{MASK}", text)
    text = _KV_SECRET.sub(_mask_kv, text)
    text = _FLAG_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _SIGV4.sub(lambda m: f"{m['key']}{MASK}", text)
    return _TOKEN_SHAPES.sub(MASK, text)


def redact_url(url: str) -> str:
    """The URL with its userinfo and credential query parameters replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.scheme and "@" in parts.netloc:
        # rsplit: a password may contain an unencoded '@'; the host is after the last one.
        parts = parts._replace(netloc=f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}")
        url = urlunsplit(parts)
    return redact_text(url)


def redact(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string passed through redact_text;
    a string under a key that names a credential (`"password"`, `"api_key"`) is masked whole."""
    if isinstance(value, str):
        return redact_text(value, environ)
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and isinstance(v, str) and v and _SECRET_NAME.fullmatch(k)
            else redact(v, environ)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v, environ) for v in value)
    return value


# --- the whole process: log records, warnings, uncaught exceptions -----------------------------

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that print request headers, signed URLs or credentials at DEBUG (botocore logs the
# Authorization and X-Amz-Security-Token headers), or are just noise at INFO: WARNING even
# under -v, which raises only tfship's own loggers to DEBUG.
QUIET_LOGGERS: tuple[str, ...] = (
    "absl",
    "aiobotocore",
    "aiohttp",
    "asyncio",
    "boto3",
    "botocore",
    "charset_normalizer",
    "filelock",
    "fsspec",
    "gcsfs",
    "google",
    "grpc",
    "h5py",
    "httpcore",
    "httpx",
    "matplotlib",
    "oauthlib",
    "PIL",
    "requests",
    "requests_oauthlib",
    "s3fs",
    "s3transfer",
    "urllib3",
)
_HANDLER_NAME = "tfship-stderr"


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call (wrong %-args) must not hide, or leak, the message
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    return record


def _print_exception(exc_type: Any, exc: Any, tb: Any, *, file: IO[str]) -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    print(redact_text(text), end="", file=file)


@contextlib.contextmanager
def redacting_logs(*, verbose: bool = False, stream: IO[str] | None = None) -> Iterator[None]:
    """For its duration: log records (any logger), warnings and uncaught exceptions in any
    thread are redacted and written to `stream` (stderr); tfship logs at INFO (DEBUG when
    `verbose`), QUIET_LOGGERS at WARNING. Everything is restored on exit."""
    old_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        # At creation, so every handler (a user's, pytest's) sees the redacted record.
        return _redact_record(old_factory(*args, **kwargs))

    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "tfship", *QUIET_LOGGERS)}
    hooks = (sys.excepthook, threading.excepthook)

    logging.setLogRecordFactory(factory)
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("tfship").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = lambda *exc_info: _print_exception(*exc_info, file=out)
    threading.excepthook = lambda a: _print_exception(
        a.exc_type, a.exc_value, a.exc_traceback, file=out
    )
    try:
        yield
    finally:
        sys.excepthook, threading.excepthook = hooks
        logging.captureWarnings(False)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        root.removeHandler(handler)
        logging.setLogRecordFactory(old_factory)


def format_exception(exc: BaseException) -> str:
    """The traceback of `exc`, redacted (what `tfship` prints for an unexpected error)."""
    return redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
