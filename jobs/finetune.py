"""Ray job: label-efficiency fine-tuning sweep (fraction x initialisation x seed) on Ray Tune.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/finetune.py \
        [--config configs/demo.yaml] [section.key=value ...]

Re-submitting with the same ``finetune.name`` restores the sweep (``Tuner.restore``): finished
trials are kept, interrupted ones resume from their last checkpoint, errored ones are retried.
Results: Delta table ``<workdir>/tables/finetune_trials``, report and PNGs under
``<workdir>/reports/<sweep name>/``.
"""

from earthloop.errors import exit_process
from earthloop.finetune.entry import main

if __name__ == "__main__":
    exit_process(main())
