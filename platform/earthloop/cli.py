"""The ``earthloop`` console script.

Each subcommand lives in its stage's ``entry`` module and is imported only when used, so
``earthloop --help`` stays instant and a broken optional stage cannot break the others.
"""

from __future__ import annotations

import importlib
import sys

from earthloop.errors import exit_process

COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("earthloop.synth.entry", "generate synthetic Sentinel-2 L2A scenes + labels"),
    "ingest": ("earthloop.ingest.entry", "STAC search → cloud-checked chip index (Delta)"),
    "pretrain": ("earthloop.pretrain.entry", "contrastive pretraining on Ray Train"),
    "finetune": ("earthloop.finetune.entry", "label-efficiency sweep on Ray Tune"),
    "embed": ("earthloop.active.embed", "task-model embeddings + uncertainty per chip (Ray Data)"),
    "active-round": ("earthloop.active.round", "one round: embed → select → push to Label Studio"),
    "sync-labels": ("earthloop.labelstudio.sync", "pull Label Studio annotations into labels"),
}


def _usage() -> str:
    lines = ["usage: earthloop <command> [--config FILE] [section.key=value ...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"earthloop: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


def run() -> None:
    """The console script: :func:`main`, then an exit that deltalake cannot turn into a crash."""
    exit_process(main())


if __name__ == "__main__":
    run()
