"""Job: pull the loop's Label Studio annotations into the Delta ``labels`` table (idempotent).

    python jobs/sync_labels.py [--config FILE] [section.key=value ...]

Prints new/updated/unchanged/rejected counts; exits non-zero only when Label Studio (or the
configuration) fails. Needs no Ray cluster; it can also be submitted as a Ray job.
"""

from earthloop.errors import exit_process
from earthloop.labelstudio.sync import main

if __name__ == "__main__":
    exit_process(main())
