"""Ray job: embed and summarise every chip of the index with a task model (incremental).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/embed.py \
        --model-version <task_models.model_version> [--config configs/demo.yaml] [key=value ...]

Writes Delta tables ``<workdir>/tables/embeddings`` and ``<workdir>/tables/predictions``; chips
that already have rows for the model version are skipped, so re-submitting is cheap.
"""

from earthloop.active.embed import main

if __name__ == "__main__":
    raise SystemExit(main())
