# Split, session cache, one training job per fold, evaluation (docs/method.md, sections
# 3-5).
# In frozen-model mode (training.frozen_models) the split, training and evaluation rules
# do not exist: the given models predict every session of the table.
# The logic: gamer_mril/split.py and the package gamer_mril/training/ (jobs.py: run_<rule>).


rule build_cache:
    """Every session's three preprocessed maps decoded once into an uncompressed,
    memory-mapped array, so no training step decompresses NIfTI."""
    input:
        **{k: for_analysed(v) for k, v in PREPROC.items()},
        table=ANALYSED_TABLE,
    output:
        **CACHE,
    log:
        f"{OUT}/logs/build_cache.log",
    benchmark:
        f"{OUT}/benchmarks/build_cache.tsv"
    conda:
        "../envs/training.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../scripts/build_cache.py"


if not FROZEN:

    rule split_sessions:
        """Held-out test subjects, then stratified subject-grouped folds
        (docs/method.md#3-split)."""
        input:
            table=ANALYSED_TABLE,
        output:
            tsv=SPLIT,
        log:
            f"{OUT}/logs/split_sessions.log",
        benchmark:
            f"{OUT}/benchmarks/split_sessions.tsv"
        conda:
            "../envs/training.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            **config["split"],
        script:
            "../scripts/split_sessions.py"

    rule train_fold:
        """One GAMER-MRIL model per fold: EDSS-weighted BCE, balanced sampler, AdamW,
        augmentation on the training device; the epoch that training.selection names is
        kept, of the best of training.restarts random starts (one wall-time allowance each).
        """
        input:
            **CACHE,
            split=SPLIT,
        output:
            **{k: v for k, v in fold_model().items() if k != "test"},
        log:
            f"{OUT}/logs/train_fold/fold-{{fold}}.log",
        benchmark:
            f"{OUT}/benchmarks/train_fold/fold-{{fold}}.tsv"
        conda:
            "../envs/training.yaml"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=240 * TR.restarts,
            gpu=GPU,
        params:
            training=TR.job_settings(),
        script:
            "../scripts/train_fold.py"

    rule predict_test:
        """The test sessions scored by one fold's model."""
        input:
            **CACHE,
            split=SPLIT,
            weights=fold_model()["weights"],
            meta=fold_model()["meta"],
        output:
            tsv=fold_model()["test"],
        log:
            f"{OUT}/logs/predict_test/fold-{{fold}}.log",
        benchmark:
            f"{OUT}/benchmarks/predict_test/fold-{{fold}}.tsv"
        conda:
            "../envs/training.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/predict_test.py"

    rule fit_baselines:
        """The baseline classifiers (docs/method.md#52-baselines): penalised logistic
        regressions on cerebrum means, AAL3 regional means or a screen of MNI152 voxels,
        each plus age, fitted per fold
        on the fold's training sessions, scoring its validation sessions and the test
        set as the network's fold models do."""
        input:
            means=for_analysed(S.region_means),
            template_maps=for_analysed(S.template_maps),
            participants=ANALYSED_TABLE,
            split=SPLIT,
        output:
            tsv=BASELINE_PREDICTIONS,
        log:
            f"{OUT}/logs/fit_baselines.log",
        benchmark:
            f"{OUT}/benchmarks/fit_baselines.tsv"
        conda:
            "../envs/training.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=20,
        params:
            seed=config["split"]["seed"],
        script:
            "../scripts/fit_baselines.py"

    rule evaluate_models:
        """Table II (validation per fold and mean; test for the best fold's model and for
        the mean of the fold models) for the network and each baseline, the network
        against the baselines, attention weights, ROC curves, training curves and a
        reliability diagram."""
        input:
            val=fold_models("val"),
            test=fold_models("test"),
            meta=fold_models("meta"),
            epochs=fold_models("epochs"),
            split=SPLIT,
            baselines=BASELINE_PREDICTIONS,
        output:
            table=report(
                f"{GROUP}/table_ii.tsv",
                caption="../report/table_ii.rst",
                category="Classification",
            ),
            attention=report(
                f"{GROUP}/attention_weights.tsv",
                caption="../report/attention.rst",
                category="Classification",
            ),
            roc=report(
                f"{GROUP}/roc.png",
                caption="../report/roc.rst",
                category="Classification",
            ),
            comparison=report(
                f"{GROUP}/baseline_comparison.tsv",
                caption="../report/baseline_comparison.rst",
                category="Classification",
            ),
            curves=report(
                f"{GROUP}/training_curves.png",
                caption="../report/training_curves.rst",
                category="Classification",
            ),
            reliability=report(
                f"{GROUP}/reliability.png",
                caption="../report/reliability.rst",
                category="Classification",
            ),
            predictions=PREDICTIONS,
        log:
            f"{OUT}/logs/evaluate_models.log",
        benchmark:
            f"{OUT}/benchmarks/evaluate_models.tsv"
        conda:
            "../envs/training.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/evaluate_models.py"

else:

    rule predict_sessions:
        """Frozen-model mode: every session scored by every given fold model; the best
        fold's model (highest validation AUC when it was trained) is the one that explains.
        """
        input:
            **CACHE,
            weights=fold_models("weights"),
            meta=fold_models("meta"),
        output:
            predictions=PREDICTIONS,
            performance=report(
                f"{GROUP}/performance_frozen.tsv",
                caption="../report/performance_frozen.rst",
                category="Classification",
            ),
        log:
            f"{OUT}/logs/predict_sessions.log",
        benchmark:
            f"{OUT}/benchmarks/predict_sessions.tsv"
        conda:
            "../envs/training.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/predict_sessions.py"


rule train_all:
    """Cohort-level target: every fold trained and evaluated (frozen-model mode: every
    session predicted by the given models)."""
    input:
        PREDICTIONS,
