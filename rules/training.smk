# Split, session cache, one training job per fold, evaluation (METHOD.md sections 3-5).
# In frozen-model mode (training.frozen_models) the split, training and evaluation rules
# do not exist: the given models predict every session of the table.
TR = config["training"]
SPLIT = f"{OUT}/group/split.tsv"
CACHE = f"{OUT}/group/cache"
PREDICTIONS = f"{OUT}/group/predictions.tsv"


rule build_cache:
    """Every session's three preprocessed maps decoded once into an uncompressed,
    memory-mapped array, so no training step decompresses NIfTI."""
    input:
        table=config["inputs"]["participants"],
        anat=for_sessions(ANAT_DIR),
    output:
        **with_sidecars(images=f"{CACHE}/images.npy", index=f"{CACHE}/index.tsv"),
    log:
        f"{OUT}/logs/build_cache.log",
    benchmark:
        f"{OUT}/benchmarks/build_cache.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/build_cache.py"


if not FROZEN:

    rule split_sessions:
        """Held-out test subjects, then stratified subject-grouped folds (METHOD.md 3)."""
        input:
            table=config["inputs"]["participants"],
        output:
            **with_sidecars(tsv=SPLIT),
        params:
            **config["split"],
        log:
            f"{OUT}/logs/split_sessions.log",
        benchmark:
            f"{OUT}/benchmarks/split_sessions.tsv"
        resources:
            mem_mb=1000,
            runtime=5,
        conda:
            "../envs/training.yaml"
        script:
            "../scripts/split_sessions.py"


    rule train_fold:
        """One GAMER-MRIL model per fold: EDSS-weighted BCE, balanced sampler, AdamW,
        augmentation on the training device; the best-validation-AUC epoch is kept."""
        input:
            images=f"{CACHE}/images.npy",
            index=f"{CACHE}/index.tsv",
            split=SPLIT,
        output:
            weights=f"{model_dir()}/model.safetensors",
            weights_json=sidecar(f"{model_dir()}/model.safetensors"),
            meta=f"{model_dir()}/model.json",
            epochs=f"{model_dir()}/epochs.tsv",
            val=f"{model_dir()}/val_predictions.tsv",
        params:
            training={k: v for k, v in TR.items() if k not in ("gpu", "frozen_models")},
        log:
            f"{OUT}/logs/train_fold/fold-{{fold}}.log",
        benchmark:
            f"{OUT}/benchmarks/train_fold/fold-{{fold}}.tsv"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=1 if TR["gpu"] else 0,
        conda:
            "../envs/training.yaml"
        script:
            "../scripts/train_fold.py"


    rule predict_test:
        """The test sessions scored by one fold's model."""
        input:
            images=f"{CACHE}/images.npy",
            index=f"{CACHE}/index.tsv",
            split=SPLIT,
            weights=f"{model_dir()}/model.safetensors",
            meta=f"{model_dir()}/model.json",
        output:
            tsv=f"{model_dir()}/test_predictions.tsv",
        log:
            f"{OUT}/logs/predict_test/fold-{{fold}}.log",
        benchmark:
            f"{OUT}/benchmarks/predict_test/fold-{{fold}}.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            "../envs/training.yaml"
        script:
            "../scripts/predict_test.py"


    rule evaluate_models:
        """Table II (validation per fold and mean; test for the best fold's model and for
        the mean of the fold models), attention weights, ROC curves."""
        input:
            val=expand(f"{model_dir()}/val_predictions.tsv", fold=FOLDS),
            test=expand(f"{model_dir()}/test_predictions.tsv", fold=FOLDS),
            meta=fold_models("model.json"),
            split=SPLIT,
        output:
            table=report(f"{OUT}/group/table_ii.tsv", caption="../report/table_ii.rst", category="Classification"),
            attention=report(f"{OUT}/group/attention_weights.tsv", caption="../report/attention.rst", category="Classification"),
            roc=report(f"{OUT}/group/roc.png", caption="../report/roc.rst", category="Classification"),
            predictions=PREDICTIONS,
        log:
            f"{OUT}/logs/evaluate_models.log",
        benchmark:
            f"{OUT}/benchmarks/evaluate_models.tsv"
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/training.yaml"
        script:
            "../scripts/evaluate_models.py"


else:

    rule predict_sessions:
        """Frozen-model mode: every session scored by every given fold model; the best
        fold's model (highest validation AUC when it was trained) is the one that explains."""
        input:
            images=f"{CACHE}/images.npy",
            index=f"{CACHE}/index.tsv",
            weights=fold_models("model.safetensors"),
            meta=fold_models("model.json"),
        output:
            predictions=PREDICTIONS,
            performance=report(f"{OUT}/group/performance_frozen.tsv", caption="../report/performance_frozen.rst", category="Classification"),
        log:
            f"{OUT}/logs/predict_sessions.log",
        benchmark:
            f"{OUT}/benchmarks/predict_sessions.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            "../envs/training.yaml"
        script:
            "../scripts/predict_sessions.py"


#: Provenance sidecars of the cohort-level training outputs, which the audit walks from a
#: relevance map back to the raw maps. Requested by train_all (nothing downstream reads
#: them), so a run begun before a sidecar existed gets it.
TRAINING_SIDECARS = [sidecar(f"{CACHE}/images.npy"), sidecar(f"{CACHE}/index.tsv")]
if not FROZEN:
    TRAINING_SIDECARS += [sidecar(SPLIT)] + [sidecar(p) for p in fold_models()]


rule train_all:
    """Cohort-level target: every fold trained and evaluated (frozen-model mode: every
    session predicted by the given models)."""
    input:
        PREDICTIONS,
        TRAINING_SIDECARS,
