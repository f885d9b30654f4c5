"""Ray job: one active-learning round (embed if needed → select → al_rounds → Label Studio).

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env-json '{"env_vars": {"LABEL_STUDIO_URL": ..., "LABEL_STUDIO_TOKEN_PATH": ...}}' \
        -- python jobs/active_learning.py [--model-version V | --init seco] [--config FILE] [k=v ...]

Label Studio's URL and the *path* of its token file come from the environment
(``infra/local/env.sh`` exports them); the token itself never appears on a command line.
Re-submitting is safe: a round whose rows exist pushes only the chips its project lacks.
"""

from earthloop.active.round import main
from earthloop.errors import exit_process

if __name__ == "__main__":
    exit_process(main())
