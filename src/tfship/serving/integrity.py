"""Before a label moves to a version: is it, on disk, the model that was published?

A version that is loaded keeps answering from memory after its files were damaged; the next
restart of TF Serving is then an outage. So promote and rollback check the version from the
model repository first: every file's size and sha256 against the publish record
(`<model>/.tfship/versions/<v>.json`), the tfship manifest inside it (`golden.check_manifest`),
and - once it is AVAILABLE - its golden requests through `/versions/<v>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tfship.artifacts import MANIFEST
from tfship.errors import ModelError
from tfship.serving import golden, schema
from tfship.serving.repository import READY_FILE, FileManifest, manifest_diff


@dataclass(frozen=True)
class VersionCheck:
    """What was checked about one version in the repository."""

    version: int
    files: str
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def check_files(
    target: Any, version: int, *, expected: FileManifest | None = None, why: str = ""
) -> VersionCheck:
    """Files and manifest of `<model>/<version>` in the repository; ModelError (exit 6) if not
    intact. `expected`: the files it must have (this pipeline's export), if known."""
    repo, model = target.repository, target.model
    where = repo.location(model, version)
    refuse = f"refusing to {why} it" if why else "refusing to use it"
    if not repo.is_complete(model, version):
        raise ModelError(
            f"{where} is missing or incomplete (no {READY_FILE}); {refuse}; nothing changed",
            hint=f"re-publish version {version} from its run directory (`tfship publish`)",
        )
    actual = repo.version_manifest(model, version)
    warnings: list[str] = []
    if expected is not None and actual != expected:
        raise ModelError(
            f"{where} is not this pipeline's model ({manifest_diff(expected, actual)}); "
            f"{refuse}; nothing changed",
            hint="promote from the pipeline that deployed this canary, or deploy this one",
        )
    record, problems = repo.version_record(model, version)
    if record is not None and actual != record:
        raise ModelError(
            f"{where} is damaged: its files differ from what was published "
            f"({manifest_diff(record, actual)}); TF Serving would fail to load it on its next "
            f"restart; {refuse}; nothing changed",
            hint=f"re-publish version {version} from its run directory, or choose another "
            "version (`--version`)",
        )
    if record is None:
        warnings.append(
            f"{where} has no usable publish record ({'; '.join(problems)}): checked it is "
            "complete and its manifest, not its bytes"
        )
    text = repo.read_text(f"{model}/{version}/{MANIFEST.as_posix()}")
    doc, bad = schema.loads("manifest", text) if text is not None else (None, ["missing"])
    if doc is None:
        raise ModelError(
            f"{where}/{MANIFEST.as_posix()} is not a valid tfship manifest ({'; '.join(bad)}); "
            f"{refuse}; nothing changed",
            hint=f"re-publish version {version} from its run directory",
        )
    manifest = golden.check_manifest(doc, version=version, where=where)
    files = f"{len(actual)} files" + (" match the publish record" if record else "")
    return VersionCheck(version, files, manifest, warnings)


def check_served(target: Any, check: VersionCheck, tolerance: float | None) -> golden.GoldenCheck:
    """Golden requests through `/versions/<v>`: the loaded model is the published one."""
    assert target.client is not None
    outputs = target.client.predict(golden.golden_inputs(check.manifest), version=check.version)
    result = golden.compare(check.manifest, outputs, tolerance)
    if not result.ok:
        raise ModelError(
            f"{target.model}/versions/{check.version} answered its golden requests wrongly: "
            + "; ".join(result.problems),
            hint="the loaded model differs from its files; re-publish it",
        )
    return result
