"""The model repository: atomic, verified, idempotent publish; retention-safe deletes; the log."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.helpers.moto import AWS_TEST_ENV, moto_fixture
from tfship.errors import ExitCode, InfraError
from tfship.serving.repository import READY_FILE, VersionConflict, local_manifest
from tfship.serving.repository_local import LocalRepository
from tfship.serving.repository_s3 import S3Repository


def fake_savedmodel(path: Path, seed: int = 0, mb: float = 0.2) -> Path:
    """Files shaped like a SavedModel; the repository only cares about bytes."""
    (path / "variables").mkdir(parents=True)
    (path / "assets.extra").mkdir()
    size = int(mb * (1 << 20))
    data = bytes([seed % 256]) * size
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(data)
    (path / "variables" / "variables.index").write_bytes(b"index%d" % seed)
    (path / "assets.extra" / "tfship-manifest.json").write_text(f'{{"seed": {seed}}}')
    (path / READY_FILE).write_bytes(b"graph%d" % seed)
    return path


def test_publish_makes_the_version_visible_with_identical_files(tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "export" / "1")
    repo = LocalRepository(tmp_path / "repo")
    result = repo.publish("digits", 1, src)
    assert result.status == "published" and result.files == 4
    assert repo.versions("digits") == [1]
    assert local_manifest(tmp_path / "repo" / "digits" / "1") == local_manifest(src)
    assert [p.name for p in (tmp_path / "repo" / "digits").iterdir()] == ["1"]  # no temp left


def test_republishing_the_same_model_is_a_no_op(tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "e")
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, src)
    mtime = (tmp_path / "repo" / "digits" / "1" / READY_FILE).stat().st_mtime_ns
    assert repo.publish("digits", 1, src).status == "unchanged"
    assert (tmp_path / "repo" / "digits" / "1" / READY_FILE).stat().st_mtime_ns == mtime


def test_a_different_model_under_an_existing_version_is_refused(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a", seed=1))
    with pytest.raises(VersionConflict, match="already holds a different model") as err:
        repo.publish("digits", 1, fake_savedmodel(tmp_path / "b", seed=2))
    assert "new version number" in str(err.value)
    assert (tmp_path / "repo" / "digits" / "1" / READY_FILE).read_bytes() == b"graph1"


def test_an_incomplete_leftover_version_is_replaced_not_trusted(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    (tmp_path / "repo" / "digits" / "1" / "variables").mkdir(parents=True)  # no saved_model.pb
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a"))
    assert repo.is_complete("digits", 1) and repo.versions("digits") == [1]


def test_delete_hides_the_version_before_removing_it(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a"))
    repo.delete_version("digits", 1)
    assert repo.versions("digits") == []
    assert not any((tmp_path / "repo" / "digits").iterdir())


def test_deploy_log_is_append_only_json_lines(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    threads = [
        threading.Thread(target=repo.append_log, args=("digits", {"n": i, "pad": "x" * 5000}))
        for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["n"] for r in repo.read_log("digits")) == list(range(20))


def _watch_for_partial_versions(list_versions, check_complete, stop: threading.Event) -> list[str]:
    """Poll like TF Serving does: every numeric name seen must already be complete."""
    seen_bad: list[str] = []
    while not stop.is_set():
        for v in list_versions():
            if not check_complete(v):
                seen_bad.append(str(v))
    return seen_bad


def test_a_poller_never_sees_a_partial_version_while_publishing_concurrently(
    tmp_path: Path,
) -> None:
    src = fake_savedmodel(tmp_path / "src", mb=2)
    expected = local_manifest(src)
    repo = LocalRepository(tmp_path / "repo")
    model_dir = tmp_path / "repo" / "digits"
    model_dir.mkdir(parents=True)

    def complete(v: int) -> bool:
        try:
            return local_manifest(model_dir / str(v)) == expected
        except FileNotFoundError:  # deleted between listing and reading: not a partial view
            return True

    stop = threading.Event()
    bad: list[str] = []
    poller = threading.Thread(
        target=lambda: bad.extend(
            _watch_for_partial_versions(
                lambda: [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()],
                complete,
                stop,
            )
        )
    )
    poller.start()
    errors: list[BaseException] = []

    def publish_many(offset: int) -> None:
        try:
            for v in range(offset, offset + 15):
                repo.publish("digits", v, src)
                repo.publish("digits", v, src)  # a concurrent idempotent retry
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    publishers = [threading.Thread(target=publish_many, args=(1 + 15 * i,)) for i in range(2)]
    same_version = [
        threading.Thread(target=repo.publish, args=("digits", 99, src)) for _ in range(3)
    ]  # racing publishers of one version
    for t in publishers + same_version:
        t.start()
    for t in publishers + same_version:
        t.join()
    stop.set()
    poller.join()
    assert not errors
    assert bad == []
    assert repo.versions("digits") == [*range(1, 31), 99]
    assert not [p for p in model_dir.iterdir() if not p.name.isdigit()]


# ---- S3 (moto_server on 127.0.0.1) -----------------------------------------------------------


moto_endpoint = pytest.fixture(scope="module", name="moto_endpoint")(moto_fixture)


@pytest.fixture()
def s3_repo(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> S3Repository:
    import boto3

    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    bucket = request.node.name.replace("_", "-")[:50].lower()
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return S3Repository(f"s3://{bucket}/serving", endpoint_url=moto_endpoint)


@pytest.mark.integration
def test_s3_publish_is_verified_and_idempotent(s3_repo: S3Repository, tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "a", seed=1)
    assert s3_repo.publish("digits", 1, src).status == "published"
    assert s3_repo.versions("digits") == [1]
    assert s3_repo.version_manifest("digits", 1) == local_manifest(src)
    assert s3_repo.publish("digits", 1, src).status == "unchanged"
    with pytest.raises(VersionConflict):
        s3_repo.publish("digits", 1, fake_savedmodel(tmp_path / "b", seed=2))
    s3_repo.append_log("digits", {"n": 1})
    s3_repo.append_log("digits", {"n": 2})
    assert [r["n"] for r in s3_repo.read_log("digits")] == [1, 2]
    s3_repo.write_text("models.config", "x")
    assert s3_repo.read_text("models.config") == "x"
    s3_repo.delete_version("digits", 1)
    assert s3_repo.versions("digits") == []


@pytest.mark.integration
def test_s3_poller_never_sees_a_loadable_partial_version(
    s3_repo: S3Repository, tmp_path: Path
) -> None:
    """On S3 a version is loadable once saved_model.pb exists: it must be copied last."""
    src = fake_savedmodel(tmp_path / "src", mb=0.5)
    expected = local_manifest(src)
    stop = threading.Event()

    def loadable_and_complete(v: int) -> bool:
        objs = s3_repo._objects(s3_repo._key("digits", str(v)))
        if READY_FILE not in objs:
            return True  # not loadable yet: TF Serving would retry, never serve a partial
        return objs == {k: size for k, (size, _) in expected.items()}

    bad: list[str] = []
    poller = threading.Thread(
        target=lambda: bad.extend(
            _watch_for_partial_versions(
                lambda: s3_repo.versions("digits"), loadable_and_complete, stop
            )
        )
    )
    poller.start()
    for v in range(1, 6):
        s3_repo.publish("digits", v, src)
    stop.set()
    poller.join()
    assert bad == []
    assert s3_repo.versions("digits") == [1, 2, 3, 4, 5]
    keys = s3_repo._objects(s3_repo._key("digits"))
    assert not [k for k in keys if k.startswith(".tfship-tmp-")]


@pytest.mark.integration
def test_s3_errors_become_infra_errors_naming_the_bucket_and_key(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    repo = S3Repository("s3://no-such-bucket/serving", endpoint_url=moto_endpoint)
    for call in (
        lambda: repo.read_text("models.config"),
        lambda: repo.publish("digits", 1, fake_savedmodel(tmp_path / "a")),
    ):
        with pytest.raises(InfraError, match="no-such-bucket") as err:
            call()
        assert err.value.exit_code == ExitCode.INFRA
        assert "does not exist" in str(err.value)


class _Refusing:
    """An S3 client whose every object request is refused, as with wrong credentials."""

    def __getattr__(self, name: str):
        from botocore.exceptions import ClientError

        def refuse(**kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, name)

        return refuse

    def get_paginator(self, _name: str):
        class Pages:
            def paginate(self, **kwargs):
                return [{"Contents": [{"Key": f"{kwargs['Prefix']}1.json", "Size": 2}]}]

        return Pages()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r._sha256("serving/digits/1/saved_model.pb"),
        lambda r: r.read_text("models.config"),
        lambda r: r.read_log("digits"),
        lambda r: r.append_log("digits", {"n": 1}),
    ],
    ids=["sha256", "read_text", "read_log", "append_log"],
)
def test_a_refused_s3_request_is_exit_8_with_the_key_and_what_to_check(call) -> None:
    repo = S3Repository("s3://models-bucket/serving", client=_Refusing())
    with pytest.raises(InfraError) as err:
        call(repo)
    assert err.value.exit_code == ExitCode.INFRA
    assert "s3://models-bucket/serving/" in str(err.value) and "AccessDenied" in str(err.value)
    assert "credentials" in str(err.value)


def test_open_repository_rejects_unknown_schemes() -> None:
    from tfship.serving.repository import open_repository

    with pytest.raises(InfraError, match="unsupported scheme"):
        open_repository("gs://bucket/models")
    assert isinstance(open_repository("models"), LocalRepository)
