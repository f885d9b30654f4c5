"""earthloop: label-efficient learning from Sentinel-2 imagery on Ray.

The package reads as the loop: ``s2`` (domain) → ``ingest`` → ``stream`` → ``pretrain`` →
``finetune`` → ``active``, with ``store`` (Delta tables) and ``observe`` (metrics) beside them.
"""

__version__ = "0.1.0"
