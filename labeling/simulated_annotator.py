"""Label the loop's queued Label Studio tasks with ground truth, through the real API.

    python labeling/simulated_annotator.py [--init seco] [--limit N] [--noise 0.05] \
        [--config FILE] [section.key=value ...]
    python labeling/simulated_annotator.py --print-url     # the project's URL, nothing else

Why a script: ``make demo-round`` (and anyone trying the loop without an annotator at hand)
needs the queued tasks labelled so the next round has labels to learn from. It is the library's
simulated annotator (:func:`earthloop.labelstudio.simulate.annotate`): it asks Label Studio for
the next task like the UI does (uncertainty order), paints the ground truth of the demo's label
rasters (``finetune.labels``, default ``<data_dir>/manifest.json``, kind ``finetune.kind``),
optionally with noise, and submits it. Label Studio's URL and token file come from the
environment (``infra/local/env.sh``).
"""

from __future__ import annotations

import argparse
import sys

import pyarrow as pa
import pyarrow.compute as pc
from earthloop.config import ConfigError, parse_job_args, resolve_path
from earthloop.errors import exit_process, fail
from earthloop.labelstudio.client import Connection, LabelStudio, LabelStudioError
from earthloop.labelstudio.project import open_project
from earthloop.labelstudio.push import queued_chips
from earthloop.labelstudio.simulate import annotate, read_truth
from earthloop.labelstudio.sync import loop_project
from earthloop.observe.logs import setup_logging
from earthloop.store.delta import read_table
from earthloop.store.labels import label_source_from_manifest
from earthloop.store.tables import CHIPS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, prog="simulated_annotator.py")
    p.add_argument("--model-version", default=None, help="task model naming the project")
    p.add_argument("--init", default=None, help="pick among task models of this init")
    p.add_argument("--project", default=None, help="Label Studio project title")
    p.add_argument("--limit", type=int, default=None, help="at most this many tasks")
    p.add_argument("--noise", type=float, default=0.0, help="fraction of pixels relabelled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-url", action="store_true", help="print the project URL and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns, rest = _parser().parse_known_args(args)
    cfg, _ = parse_job_args(rest, "Simulated annotator for the loop's Label Studio project.")
    setup_logging()
    try:
        client = LabelStudio(Connection.from_env())
        spec = loop_project(cfg, model_version=ns.model_version, init=ns.init, title=ns.project)
        pid = open_project(client, spec)
        if ns.print_url:
            print(f"{client.url}/projects/{pid}/data")
            return 0
        queued = sorted(queued_chips(client, pid))
        chips = read_table(cfg.table_uri(CHIPS))
        rows = chips.filter(pc.is_in(chips["chip_id"], pa.array(queued, pa.string())))
        fc = cfg.finetune
        source = label_source_from_manifest(
            resolve_path(fc.labels or f"{cfg.data_dir}/manifest.json"), fc.kind
        )
        truth = read_truth(rows.to_pylist(), source.rasters)
        done = annotate(client, spec, truth, limit=ns.limit, noise=ns.noise, seed=ns.seed)
    except (ConfigError, LabelStudioError, FileNotFoundError, ValueError) as exc:
        return fail("simulated_annotator", exc)
    print(f"annotated:   {len(done)} task(s) of project {spec.title!r} ({len(queued)} queued)")
    return 0


if __name__ == "__main__":
    exit_process(main())
