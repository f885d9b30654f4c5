"""Ray job: STAC search → cloud-checked chip index (Delta).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/ingest.py \
        [--config configs/demo.yaml] [section.key=value ...]
"""

from earthloop.errors import exit_process
from earthloop.ingest.entry import main

if __name__ == "__main__":
    exit_process(main())
