# Shared definitions, included first: the session table, the configuration's derived
# constants, every output path pattern (from gamer_mril.layout: each name is defined once)
# and the input functions. No other rule file defines a path or a constant that another
# one reads, so the rule files can be included in any order.
# The package gamer_mril is installed where Snakemake runs and in every rule environment
# (the Snakefile checks the first; envs/*.yaml install it from GAMER_MRIL_ROOT).
import json
import os

import pandas as pd
from snakemake.logging import logger

from gamer_mril import CONTRASTS
from gamer_mril import layout
from gamer_mril.audit import final_maps
from gamer_mril.errors import InputError
from gamer_mril.inputs import Selection, load_participants, select_sessions
from gamer_mril.io import sidecar_path
from gamer_mril.mapfiles import check_session_files
from gamer_mril.modelfiles import MODEL_JSON, MODEL_WEIGHTS, find_fold_models
from gamer_mril.exclusion import check_exclusions, exclusions
from gamer_mril.settings import (
    AssessmentSettings,
    PreprocessingSettings,
    QcSettings,
    RelevanceSettings,
    TrainingSettings,
)
from gamer_mril.templates import TEMPLATE_SPACE as TPL

#: Root of the BIDS-derivative output dataset (run elsewhere with --directory).
OUT = "results"


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",
    fold="[0-9]+",


# ------------------------------------------------------------- the stages' settings
try:
    #: Each stage's settings, read and checked once (gamer_mril/settings.py); rules pass
    #: them under their config.yaml names.
    PP = PreprocessingSettings.from_config(config["preprocessing"])
    QC = QcSettings.from_config(config["qc"])
    TR = TrainingSettings.from_config(config["training"])
    REL = RelevanceSettings.from_config(config["relevance"])
    ASM = AssessmentSettings.from_config(config["assessment"])
except ValueError as err:
    raise WorkflowError(f"bad config: {err}") from None


# ---------------------------------------------------------------- the session table
def _load_sessions():
    """The selected sessions of the table, checked with their files. A table that does not
    exist gives no sessions and a warning: every target takes the table as an input, so
    Snakemake stops when it plans a run, naming the file, while commands that need no
    data (--lint, --list-rules) still work."""
    path = config["inputs"]["participants"]
    if not os.path.exists(path):
        logger.warning(
            f"The participants table {path} does not exist; check the 'participants' "
            f"entry of the config (the demo's is made by `make demo`)."
        )
        return pd.DataFrame(columns=["subject", "session", "age", "edss"])
    try:
        table = load_participants(path)
        selection = Selection.from_config(config["inputs"])
        selected = select_sessions(table, selection, f"the participants table {path}")
        ignored = check_session_files(
            selected,
            config["inputs"]["maps"],
            config["inputs"].get("brain_mask"),
            selection,
        )
    except InputError as err:
        raise WorkflowError(f"bad input: {err}") from None
    validate(selected, workflow.source_path("../schemas/participants.schema.yaml"))
    if selection.active:
        logger.info(
            f"{len(selected)} of {len(table)} sessions of {path} selected by the config's "
            f"participant/session labels; maps of {ignored} unselected sessions on disk "
            f"are ignored."
        )
    return selected


SESSIONS = _load_sessions()
_AGES = {
    (str(s), str(t)): float(a)
    for s, t, a in zip(SESSIONS["subject"], SESSIONS["session"], SESSIONS["age"])
}


def session_age(wildcards):
    """Age (years) of the job's session, from the participants table."""
    return _AGES[(wildcards.subject, wildcards.session)]


def _listed_exclusions():
    """The sessions of qc.exclude with their reasons, checked against the table when the
    workflow is read."""
    try:
        excluded = exclusions(QC.exclude)
        if len(SESSIONS):
            check_exclusions(excluded, zip(SESSIONS["subject"], SESSIONS["session"]))
    except ValueError as err:
        raise WorkflowError(f"bad config: {err}") from None
    if excluded:
        logger.info(
            f"{len(excluded)} sessions left out of training and assessment (qc.exclude): "
            + ", ".join(f"sub-{s}_ses-{t} ({r})" for (s, t), r in excluded.items())
        )
    return excluded


#: The sessions qc.exclude leaves out (known when the workflow is read). Those that a QC
#: flag of a kind in qc.exclude_flagged leaves out are known only once the QC table
#: exists: the checkpoint analysed_sessions (rules/qc.smk) writes ANALYSED_TABLE, and
#: for_analysed reads it through analysed_table, once per version of the file.
EXCLUDED = _listed_exclusions()
_ANALYSED = {}


def analysed_table():
    """The rows of the analysed sessions, from the table of the checkpoint
    analysed_sessions (Snakemake waits for it: IncompleteCheckpointException until it
    has run). Read once per version of the file; the first read logs who was left out
    and why (its sidecar)."""
    checkpoints.analysed_sessions.get()
    path = ANALYSED_TABLE
    stamp = (path, os.stat(path).st_mtime_ns)
    if _ANALYSED.get("stamp") != stamp:
        table = load_participants(path)
        _ANALYSED.clear()
        _ANALYSED.update(stamp=stamp, table=table, files={})
        facts = json.loads(sidecar_path(path).read_text()).get("Facts", {})
        left_out = facts.get("Excluded", [])
        if left_out:
            logger.info(
                f"{len(left_out)} sessions left out of training and assessment ({path}): "
                + "; ".join(
                    f"sub-{e['subject']}_ses-{e['session']} ({e.get('by', 'qc.exclude')}: "
                    f"{e['reason']})"
                    for e in left_out
                )
            )
    return _ANALYSED["table"]


def _for(table, pattern):
    return expand(
        pattern,
        zip,
        subject=list(table["subject"]),
        session=list(table["session"]),
    )


def for_sessions(pattern):
    """Expand a {subject}/{session} path pattern over every session of the table."""
    return _for(SESSIONS, pattern)


def for_analysed(pattern):
    """An input function: the {subject}/{session} path pattern expanded over the analysed
    sessions (the table without those of qc.exclude and qc.exclude_flagged), known once
    the checkpoint analysed_sessions has run: training, relevance maps and assessment.
    """

    def analysed_files(wildcards):
        table = analysed_table()
        cache = _ANALYSED["files"]
        if pattern not in cache:
            cache[pattern] = _for(table, pattern)
        return cache[pattern]

    return analysed_files


# ----------------------------------------------------------- configuration constants
#: Raw maps (the config's patterns), keyed by contrast like every step's named maps.
RAW = {c: config["inputs"]["maps"][c] for c in CONTRASTS}
UNITS = {c: config["inputs"]["units"].get(c, "fraction") for c in CONTRASTS}
SCENARIOS = list(REL.scenarios)
#: Top-N levels of the quantile masks: the configured ones and the heatmap level.
HEAT = ASM.heatmap_level
LEVELS = list(ASM.levels)
#: Levels of the LeRF and random controls of voxel inverting (unset: every level).
CONTROL_LEVELS = list(ASM.control_levels)
#: Scenarios of the paper's Fig. 6 (besides the chosen one), those computed.
FIG6_SCENARIOS = [n for n in (3, 4) if n in SCENARIOS]
HEATMAP_GROUPS = ("severe", "mild", "all")
#: GPU jobs ask for resources gpu=1 where the config says so.
GPU = 1 if TR.gpu else 0

# ------------------------------------------------------------- per-session outputs
#: Every per-session output name, as a {subject}/{session} pattern (gamer_mril/layout.py).
S = layout.Session(OUT, "{subject}", "{session}")
SCALED = {c: S.scaled(layout.SUFFIX[c]) for c in CONTRASTS}
XFM_TO_NDI = {c: S.xfm_to_ndi(layout.SUFFIX[c]) for c in ("qT1", "MWF")}
NDI_GRID = {c: S.ndi_grid(layout.SUFFIX[c]) for c in CONTRASTS}
CROP_GRID = {c: S.crop_grid(layout.SUFFIX[c]) for c in CONTRASTS}
PREPROC = {c: S.preproc(c) for c in CONTRASTS}
#: Step 2b's transforms (MNI152 and the qT1 grid): affine, warp and inverse warp (SyN),
#: or the affine alone (Affine); the package decides which (layout.template_transform_outputs).
TEMPLATE_XFM = S.template_xfm_of(PP.template_transform)
#: Step 6: the cropped (and NDI) grid and MNI152, through step 3's qT1 -> NDI
#: co-registration and step 2b's transforms (gamer_mril.preprocessing.to_template_transforms).
CROP_TO_TEMPLATE = {"coreg": XFM_TO_NDI["qT1"], **TEMPLATE_XFM}
#: The relevance stage's per-session images, each a scenario stack (every requested
#: scenario in one file, gamer_mril/scenario_stack.py): relevance maps in the cropped and
#: the NDI grid, the quantile masks' level images, the top-N masks warped to MNI152.
RELMAPS = S.relmaps("NDIcrop")
RELMAPS_NDI = S.relmaps("NDI")
QMASKS = S.qmasks
TOP_MASKS = S.top_masks(HEAT)
#: Whether any requested scenario is an LRP one (their maps carry conservation records).
WITH_LRP = any(n in layout.LRP_SCENARIOS for n in SCENARIOS)

# -------------------------------------------------------------- cohort-level outputs
GROUP = f"{OUT}/group"
TEMPLATE_CEREBELLUM = f"{OUT}/templates/tpl-{TPL}_res-01_desc-cerebellum_mask.nii.gz"
#: The MNI152 T1w image and brain mask at {res} mm (rule template_images, made once).
TEMPLATE_IMAGES = dict(
    t1w=f"{OUT}/templates/tpl-{TPL}_res-{{res}}_T1w.nii.gz",
    mask=f"{OUT}/templates/tpl-{TPL}_res-{{res}}_desc-brain_mask.nii.gz",
)


def template_images(resolution):
    """The files of TEMPLATE_IMAGES at ``resolution`` mm."""
    return {
        k: v.format(res=f"{int(resolution):02d}") for k, v in TEMPLATE_IMAGES.items()
    }


#: The template registered to each session (step 2b) and the grid of the MNI152 outputs.
SKULLSTRIP_TEMPLATE = template_images(PP.skullstrip_template_resolution)
OUTPUT_TEMPLATE = template_images(PP.template_resolution)
QC_TABLE = f"{GROUP}/preprocessing_qc.tsv"
SPLIT = f"{GROUP}/split.tsv"
#: The session cache: every session's network inputs in one memory-mapped array.
CACHE = dict(images=f"{GROUP}/cache/images.npy", index=f"{GROUP}/cache/index.tsv")
PREDICTIONS = f"{GROUP}/predictions.tsv"
BASELINE_PREDICTIONS = f"{GROUP}/baseline_predictions.tsv"
INVERTING_AUC = f"{GROUP}/inverting_auc.tsv"
#: Per scenario: AOPC, the random band at N = 40, the comparison with the chosen scenario.
INVERTING_SCENARIOS = f"{GROUP}/inverting_scenarios.tsv"
CHOSEN = f"{GROUP}/chosen_scenario.json"
#: The LRP maps' conservation records over the cohort (rule relevance_conservation).
CONSERVATION = dict(
    per_map=f"{GROUP}/relevance_conservation.tsv",
    summary=f"{GROUP}/relevance_conservation_summary.tsv",
)
#: The participants table as given, and the validated rows of the selected sessions that
#: every cohort rule reads (rule select_participants).
RAW_PARTICIPANTS = config["inputs"]["participants"]
PARTICIPANTS = f"{OUT}/participants.tsv"
#: The rows of the sessions analysed, those of qc.exclude and qc.exclude_flagged left out
#: (written by the checkpoint analysed_sessions): the table of every training and
#: assessment rule; and the sessions left out, each with its reason and setting.
ANALYSED_TABLE = f"{GROUP}/analysed_sessions.tsv"
EXCLUDED_TABLE = f"{GROUP}/excluded_sessions.tsv"


def heatmap(n, group):
    """A group heatmap of one scenario (MNI152)."""
    return f"{GROUP}/heatmaps/tpl-{TPL}_scenario-{int(n):02d}_group-{group}_desc-top{HEAT}_heatmap.nii.gz"


def log_path(rule):
    """The log of a per-session job."""
    return f"{OUT}/logs/{rule}/sub-{{subject}}_ses-{{session}}.log"


def bench_path(rule):
    """The benchmark (seconds, memory) of a per-session job."""
    return f"{OUT}/benchmarks/{rule}/sub-{{subject}}_ses-{{session}}.tsv"


def given_mask(wildcards):
    """The user's brain mask for the session, if the config names a pattern and it exists."""
    pattern = config["inputs"].get("brain_mask")
    if not pattern:
        return []
    path = pattern.format(subject=wildcards.subject, session=wildcards.session)
    return [path] if os.path.exists(path) else []


# --------------------------------------------------------------------- fold models
def _fold_models():
    """(folder of the fold models, their fold numbers); frozen models are checked here."""
    frozen = TR.frozen_models
    if not frozen:
        return f"{OUT}/models", list(range(config["split"]["n_folds"]))
    try:
        found = find_fold_models(frozen)
    except ValueError as err:
        raise WorkflowError(f"bad config: training.frozen_models: {err}") from None
    return str(frozen).rstrip("/"), list(found)


#: Frozen-model mode: trained models given in the config, no training jobs.
FROZEN = bool(TR.frozen_models)
MODELS, FOLDS = _fold_models()


def model_dir(fold="{fold}"):
    """Folder of one fold's model (trained here, or frozen from an earlier run)."""
    return f"{MODELS}/fold-{fold}"


def fold_model(fold="{fold}"):
    """The files of one fold's model, as train_fold writes them."""
    d = model_dir(fold)
    return dict(
        weights=f"{d}/{MODEL_WEIGHTS}",
        meta=f"{d}/{MODEL_JSON}",
        epochs=f"{d}/epochs.tsv",
        val=f"{d}/val_predictions.tsv",
        test=f"{d}/test_predictions.tsv",
    )


def fold_models(name="weights"):
    """One file of every fold model (a key of fold_model)."""
    return [fold_model(k)[name] for k in FOLDS]


def explaining_models():
    """What picks and runs the model that explains a session: every fold model's weights
    (each model.json is written by the job that writes its weights) and, unless the
    models are frozen, the split table."""
    return dict(weights=fold_models(), **({} if FROZEN else {"split": SPLIT}))


# -------------------------------------------------------------------------- audit
def default_audit_targets():
    """The audit's default targets: every analysed session's network inputs and relevance
    maps (the analysed-sessions table as the run left it; without it, the table without
    qc.exclude), then the group heatmaps (called when the audit runs, after every rule is
    defined)."""
    if os.path.exists(ANALYSED_TABLE):
        table = load_participants(ANALYSED_TABLE)
        keys = list(zip(table["subject"], table["session"]))
    else:
        keys = [
            k
            for k in zip(SESSIONS["subject"], SESSIONS["session"])
            if k not in EXCLUDED
        ]
    targets = []
    for subject, session in keys:
        s = layout.Session(OUT, subject, session)
        targets += list(s.preproc_maps.values())
        targets += [s.relmaps("NDIcrop"), s.relmaps("NDI")]
    return targets + final_maps(rules.group_heatmaps.output)


# ------------------------------------------------------------------- report pages
#: The index of the session pages (made by session_index; each page: layout.Session.page),
#: and where `make demo` writes the HTML report, which the pages link back to.
SESSION_INDEX = f"{GROUP}/sessions.html"
REPORT_HTML = f"{OUT}/report.html"


def relevance_of_analysed(wildcards):
    """An analysed session's relevance map and reportlet (none for a session left out);
    waits for the checkpoint analysed_sessions."""
    table = analysed_table()
    keys = set(zip(table["subject"].astype(str), table["session"].astype(str)))
    if (wildcards.subject, wildcards.session) not in keys:
        return {}
    return {
        "relmap": RELMAPS.format(subject=wildcards.subject, session=wildcards.session),
        "relevance": S.reportlet("relevance").format(
            subject=wildcards.subject, session=wildcards.session
        ),
    }


# ------------------------------- group statistics in MNI152 (docs/method.md#77-group-statistics-in-mni152)
from gamer_mril.baselines import SCREEN_EXTENT

#: Each session's relevance, normalised (sum 1 over its cerebrum) and warped to the
#: voxel screen's MNI152 grid (rule warp_relevance), a scenario stack.
RELNORM = S.relnorm
#: The MNI152 files whose extent the voxel screen's grid covers (its brain mask gives
#: the template cerebrum there, with TEMPLATE_CEREBELLUM).
SCREEN_TEMPLATE = template_images(SCREEN_EXTENT)
GROUP_STATS = layout.GROUP_STATS
RELEVANCE_CLUSTERS = f"{GROUP}/stats/relevance_clusters.tsv"
INPUT_CLUSTERS = f"{GROUP}/stats/input_clusters.tsv"


def relevance_stat(n, stat):
    """One image of the group test of scenario ``n``'s normalised relevance."""
    return layout.group_stat(GROUP, stat, scenario=n)


def input_stat(contrast, stat):
    """One image of the group test of an input map in MNI152."""
    return layout.group_stat(GROUP, stat, contrast=contrast)


def stat_key(name, stat):
    """The rules' output key of a group statistic (``name``: scenario or contrast)."""
    label = f"{name:02d}" if isinstance(name, int) else name
    return f"stat_{label}_{stat.replace('-', '_')}"
