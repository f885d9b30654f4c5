"""A labeling project: its title, kind, class set and preview folder, and opening it in Label Studio.

Why found by title and never remembered by id: the project must survive our process and Label
Studio's restarts, and a second push must land in the same project. Opening is idempotent: a
missing project is created, a changed class set updates the config (Label Studio refuses a
change that would orphan existing annotations, and that error is shown as is), and the sampling
is (re)set to uncertainty so "next task" follows the model's confidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from earthloop.labelstudio.client import LabelStudio
from earthloop.labelstudio.configs import KINDS, label_config

UNCERTAINTY_SAMPLING = "Uncertainty sampling"


@dataclass(frozen=True)
class ProjectSpec:
    """What a labeling project is, independent of the server holding it.

    Attributes:
        title: the project's title in Label Studio (its identity for us; ≥ 3 characters).
        kind: ``segmentation`` (brush masks) or ``classification`` (scene choices).
        classes: class id → name; id 0 is "unlabelled" and never a label.
        files_root: Label Studio's local-files document root (``LS_FILES_ROOT``); previews are
            written below it and served by Label Studio to logged-in users of the project.
        allow_empty: accept annotations that paint nothing / choose nothing.
    """

    title: str
    kind: str
    classes: Mapping[int, str]
    files_root: Path
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown label kind {self.kind!r} (expected one of {KINDS})")
        if len(self.title.strip()) < 3:
            raise ValueError("a Label Studio project title needs at least 3 characters")
        if 0 in self.classes:
            raise ValueError("class id 0 means unlabelled; it cannot be a label")

    @property
    def names(self) -> list[str]:
        """Class names in class-id order (the label values of the config)."""
        return [self.classes[c] for c in sorted(self.classes)]

    @property
    def config(self) -> str:
        return label_config(self.kind, self.names)

    def preview_dir(self, project_id: int) -> Path:
        """Where this project's previews live: one folder per project under the document root."""
        return self.files_root.resolve() / "label-studio-previews" / f"project-{project_id}"


def open_project(client: LabelStudio, spec: ProjectSpec) -> int:
    """Find or create the project titled ``spec.title``; returns its id.

    Raises:
        LabelStudioError: the server refused (e.g. a class change that orphans annotations).
        ValueError: two projects share the title (ambiguous: we would push into one and pull
            from the other).
    """
    found = [p for p in client.projects() if p["title"] == spec.title]
    if len(found) > 1:
        raise ValueError(f"{len(found)} Label Studio projects are titled {spec.title!r}")
    if found:
        project = found[0]
        if project["label_config"].strip() != spec.config.strip():
            client.update_project(int(project["id"]), label_config=spec.config)
    else:
        project = client.create_project(spec.title, spec.config)
    pid = int(project["id"])
    if project.get("sampling") != UNCERTAINTY_SAMPLING:
        client.update_project(pid, sampling=UNCERTAINTY_SAMPLING)
    folder = spec.preview_dir(pid)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(Path(s["path"]) == folder for s in client.local_storages(pid)):
        client.create_local_storage(pid, str(folder), title="earthloop chip previews")
    return pid
