"""The Label Studio side of the labeling loop: label configs, push, pull.

Why a package module rather than code under ``labeling/``: push and pull are library code that
jobs (``jobs/active_learning.py``, ``jobs/sync_labels.py``) and tests import, so they live in the
installed package next to the table contracts they write. ``labeling/`` keeps what is not Python
library code (the README, the webhook service when it exists).

The project talks to Label Studio over its REST API with ``requests`` (:mod:`.client`); the
vendor SDK is not a dependency (it pulls ~500 MB and caps numpy). Brush RLE is implemented here
(:mod:`.rle`) and tested bit for bit against the SDK bundled in the server's own venv.
"""
