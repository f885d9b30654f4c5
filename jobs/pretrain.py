"""Ray job: contrastive pretraining (SeCo, dense, CSCL) with Ray Train.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pretrain.py \
        [--config configs/demo.yaml] [section.key=value ...]

Re-submitting with the same ``pretrain.run_name`` resumes from its last checkpoint.
"""

from earthloop.errors import exit_process
from earthloop.pretrain.entry import main

if __name__ == "__main__":
    exit_process(main())
