"""A small REST client for the Label Studio calls the loop makes (Label Studio 1.23).

Why not the vendor SDK: ``label-studio-sdk`` pulls ~500 MB (opencv, pandas, nltk) into the main
venv and caps numpy; the loop needs a dozen endpoints, which ``requests`` covers. The endpoints
and their behaviour were checked against the server (../shared/STACK.md and
tests/labeling/). The token comes from the environment or a file only, is sent as a header and
never appears in a message or a repr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from earthloop.errors import EarthloopError

Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8080"
PAGE_SIZE = 100
IMPORT_BATCH = 100


class LabelStudioError(EarthloopError, RuntimeError):
    """Label Studio refused or failed a request (the message names the call and the status)."""


@dataclass(frozen=True)
class Connection:
    """Where Label Studio is and the API token to use (the token is never shown)."""

    url: str
    token: str = field(repr=False)

    @classmethod
    def from_env(cls) -> Connection:
        """``LABEL_STUDIO_URL`` plus ``LABEL_STUDIO_API_KEY`` or ``LABEL_STUDIO_TOKEN_PATH``.

        ``infra/local/labelstudio.sh env`` prints the URL and the token file's path.

        Raises:
            LabelStudioError: no token in the environment and no readable token file.
        """
        url = os.environ.get("LABEL_STUDIO_URL", DEFAULT_URL).rstrip("/")
        token = os.environ.get("LABEL_STUDIO_API_KEY", "").strip()
        if not token:
            path = os.environ.get("LABEL_STUDIO_TOKEN_PATH", "")
            if not path or not Path(path).is_file():
                raise LabelStudioError(
                    "no Label Studio token: set LABEL_STUDIO_API_KEY or LABEL_STUDIO_TOKEN_PATH "
                    '(eval "$(infra/local/labelstudio.sh env)")'
                )
            token = Path(path).read_text().strip()
        return cls(url, token)


class LabelStudio:
    """The Label Studio endpoints used by push, pull and the simulated annotator."""

    def __init__(self, conn: Connection, *, timeout_s: float = 60.0) -> None:
        self.url = conn.url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Token {conn.token}"

    def __repr__(self) -> str:
        return f"LabelStudio({self.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; JSON back (None for an empty body).

        Raises:
            LabelStudioError: connection failure or a non-2xx status (with the start of the body,
                which never holds the token: it is only ever in our request header).
        """
        try:
            resp = self._http.request(method, self.url + path, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioError(f"{method} {path}: Label Studio unreachable ({exc})") from None
        if not resp.ok:
            raise LabelStudioError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json() if resp.content else None

    # --- projects --------------------------------------------------------------------------

    def projects(self) -> Iterator[Json]:
        """Every project visible to the token's user."""
        page = 1
        while True:
            body = self.request("GET", "/api/projects/", params={"page": page, "page_size": 100})
            yield from body["results"]
            if not body.get("next"):
                return
            page += 1

    def create_project(self, title: str, label_config: str) -> Json:
        return dict(
            self.request(
                "POST", "/api/projects/", json={"title": title, "label_config": label_config}
            )
        )

    def update_project(self, project_id: int, **fields: Any) -> Json:
        return dict(self.request("PATCH", f"/api/projects/{project_id}/", json=fields))

    def local_storages(self, project_id: int) -> list[Json]:
        return list(
            self.request("GET", "/api/storages/localfiles/", params={"project": project_id})
        )

    def create_local_storage(self, project_id: int, path: str, title: str) -> Json:
        """A local-files import storage over ``path``: it authorises serving the files below it.

        It is never synced: tasks are imported by push, with their own data.
        """
        body = {"project": project_id, "path": path, "title": title, "use_blob_urls": True}
        return dict(self.request("POST", "/api/storages/localfiles/", json=body))

    def user_emails(self) -> dict[int, str]:
        """User id → e-mail for the organisation: exports name annotators by id only."""
        return {int(u["id"]): str(u["email"]) for u in self.request("GET", "/api/users/")}

    # --- tasks -----------------------------------------------------------------------------

    def tasks(self, project_id: int) -> Iterator[Json]:
        """Every task of a project (id, data, annotation count), in id order, page by page."""
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page}
            params.update(page_size=PAGE_SIZE, fields="task_only")
            try:
                body = self.request("GET", "/api/tasks/", params=params)
            except LabelStudioError as exc:  # past the last page the data manager answers 404
                if "HTTP 404" in str(exc) and page > 1:
                    return
                raise
            batch = body["tasks"]
            yield from batch
            if len(batch) < PAGE_SIZE:
                return
            page += 1

    def import_tasks(self, project_id: int, tasks: Sequence[Json]) -> list[int]:
        """Create tasks (with their predictions); returns the new task ids in order."""
        ids: list[int] = []
        for i in range(0, len(tasks), IMPORT_BATCH):
            body = self.request(
                "POST",
                f"/api/projects/{project_id}/import",
                params={"return_task_ids": "true"},
                json=list(tasks[i : i + IMPORT_BATCH]),
            )
            ids.extend(int(t) for t in body["task_ids"])
        return ids

    def next_task(self, project_id: int) -> Json | None:
        """The task Label Studio serves the token's user next (the project's sampling order);
        None when the queue is done."""
        try:
            return dict(self.request("GET", f"/api/projects/{project_id}/next/"))
        except LabelStudioError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    # --- annotations -----------------------------------------------------------------------

    def create_annotation(self, task_id: int, result: list[Json], lead_time_s: float) -> Json:
        body = {"result": result, "lead_time": lead_time_s}
        return dict(self.request("POST", f"/api/tasks/{task_id}/annotations/", json=body))

    def update_annotation(self, annotation_id: int, result: list[Json]) -> Json:
        return dict(
            self.request("PATCH", f"/api/annotations/{annotation_id}/", json={"result": result})
        )

    def export_annotated(self, project_id: int) -> list[Json]:
        """Every task that has at least one annotation, with its annotations (JSON export).

        ``download_all_tasks=false`` is the server-side filter; ``tasks(only_annotated=True)``
        is ignored by the server (STACK.md), so it is not used.
        """
        body = self.request(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "false"},
        )
        return list(body)
