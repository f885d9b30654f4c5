"""earthloop.finetune: label-efficient fine-tuning sweeps on Ray Tune.

How much does pretraining buy at a given label budget? A sweep trains segmentation (U-Net on
the pretrained encoder) or scene classification (single- or multi-label) over a grid of label
fractions x initialisations (random, an earthloop ``backbone.pt``, a foreign state_dict) x
seeds, with a small per-cell hyper-parameter search and ASHA, on spatially disjoint splits and
nested stratified label subsets; it records one Delta row per trial and writes a report.

Modules (import what you need; importing this package pulls in neither Ray nor torch):

* the ``finetune:`` section is :class:`earthloop.config.FinetuneConfig` (the one schema);
* :mod:`~earthloop.finetune.subsets` — nested, class-stratified, seeded label subsets;
* :mod:`~earthloop.finetune.splits` — train/val/test by lon/lat blocks;
* :mod:`~earthloop.finetune.data` — label pool (driver) and in-memory trial arrays (worker);
* :mod:`~earthloop.finetune.metrics` — mIoU, boundary mIoU, F1, accuracy, mAP (numpy);
* :mod:`~earthloop.finetune.model` — initialisations (checked), discriminative lrs;
* :mod:`~earthloop.finetune.train` — the plain-torch trial loop;
* :mod:`~earthloop.finetune.plan` — ``plan_sweep``: everything checked before the cluster;
* :mod:`~earthloop.finetune.trial` — one trial (and its Tune trainable), checkpoint resume;
* :mod:`~earthloop.finetune.rows` — the ``finetune_trials`` schema, rows and selection;
* :mod:`~earthloop.finetune.sweep` — the Tuner's wiring, ``run_sweep``, ``plain_loop``;
* :mod:`~earthloop.finetune.report` — markdown + PNG report from the trial rows;
* :mod:`~earthloop.finetune.bigearthnet` — real BigEarthNet patches, 19/43-class multi-hot;
* :mod:`~earthloop.finetune.quick_pretrain` — a short in-process SeCo run (tests, benchmarks).

The task model and prediction live outside this package (:mod:`earthloop.models.task`,
:mod:`earthloop.inference`): using a trained model never imports how it was trained.
"""
