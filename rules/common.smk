# Shared helpers: the session table, BIDS-derivative names, input functions.
# Scripts import the package through the scripts/gamer_mril link (Snakemake puts a
# script's folder on its sys.path); the Snakefile imports it from the repository root.
import sys

sys.path.insert(0, workflow.basedir)

from gamer_mril import CONTRASTS
from gamer_mril import layout
from gamer_mril.audit import final_maps
from gamer_mril.errors import InputError
from gamer_mril.inputs import check_session_files, load_participants
from gamer_mril.io import sidecar_path
from gamer_mril.modelfiles import find_fold_models

#: Root of the BIDS-derivative output dataset (run elsewhere with --directory).
OUT = "results"



wildcard_constraints:
    subject="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",


def _load_sessions():
    try:
        table = load_participants(config["inputs"]["participants"])
        check_session_files(
            table, config["inputs"]["maps"], config["inputs"].get("brain_mask")
        )
    except InputError as err:
        raise WorkflowError(f"bad input: {err}") from None
    validate(table, workflow.source_path("../schemas/participants.schema.yaml"))
    return table


SESSIONS = _load_sessions()


#: The two folders of a session, one job each (gamer_mril/layout.py): preprocessing
#: (anat) and relevance maps with their per-session assessment (xai).
ANAT_DIR = layout.session_dir(OUT, "anat")
XAI_DIR = layout.session_dir(OUT, "xai")


def sidecar(path):
    """The JSON sidecar of an output path (x.nii.gz -> x.json, x.mat -> x.json)."""
    return str(sidecar_path(path))


def with_sidecars(**paths):
    """Named outputs plus a `<name>_json` sidecar for each."""
    out = dict(paths)
    out.update({f"{k}_json": sidecar(v) for k, v in paths.items()})
    return out


def log_path(rule):
    """The log of a per-session job. Per-session jobs have no benchmark: file: they record
    each step's seconds and the peak memory in their folder's timing.tsv."""
    return f"{OUT}/logs/{rule}/sub-{{subject}}_ses-{{session}}.log"


def given_mask(wildcards):
    """The user's brain mask for the session, if the config names a pattern and it exists."""
    pattern = config["inputs"].get("brain_mask")
    if not pattern:
        return []
    path = pattern.format(subject=wildcards.subject, session=wildcards.session)
    return [path] if os.path.exists(path) else []


def for_sessions(pattern):
    """Expand a {subject}/{session} path pattern over every session of the table."""
    return expand(
        pattern, zip, subject=list(SESSIONS["subject"]), session=list(SESSIONS["session"])
    )


def _fold_models():
    """(folder of the fold models, their fold numbers); frozen models are checked here."""
    frozen = config["training"].get("frozen_models")
    if not frozen:
        return f"{OUT}/models", list(range(config["split"]["n_folds"]))
    try:
        found = find_fold_models(frozen)
    except ValueError as err:
        raise WorkflowError(f"bad config: training.frozen_models: {err}") from None
    return str(frozen).rstrip("/"), list(found)


#: Frozen-model mode: trained models given in the config, no training jobs.
FROZEN = bool(config["training"].get("frozen_models"))
MODELS, FOLDS = _fold_models()


def model_dir(fold="{fold}"):
    """Folder of one fold's model (trained here, or frozen from an earlier run)."""
    return f"{MODELS}/fold-{fold}"


def fold_models(name="model.safetensors"):
    """One file of every fold model."""
    return [f"{model_dir(k)}/{name}" for k in FOLDS]


def explain_inputs():
    """The session's preprocessing folder, the fold models' weights and (unless the
    models are frozen) the split table that picks the fold model of each session."""
    inputs = dict(
        anat=ANAT_DIR,
        # Each model's model.json is written by the job that writes its weights.
        weights=fold_models("model.safetensors"),
    )
    if not FROZEN:
        inputs["split"] = SPLIT
    return inputs


_AGES = {(str(s), str(t)): float(a)
         for s, t, a in zip(SESSIONS["subject"], SESSIONS["session"], SESSIONS["age"])}


def session_age(wildcards):
    """Age (years) of the job's session, from the participants table."""
    return _AGES[(wildcards.subject, wildcards.session)]


def heatmap(n, group):
    """A group heatmap of one scenario (MNI152)."""
    return f"{GROUP}/heatmaps/tpl-{TPL}_scenario-{int(n):02d}_group-{group}_desc-top{HEAT}_heatmap.nii.gz"


# -------------------------------------------------------------------- audit
def default_audit_targets():
    """The audit's default targets: every session's network inputs and relevance maps,
    then the group heatmaps (called when the audit runs, after every rule is defined)."""
    targets = []
    for subject, session in zip(SESSIONS["subject"], SESSIONS["session"]):
        s = layout.Session(OUT, subject, session)
        targets += list(s.preproc_maps.values())
        targets += [s.relmap(space, n) for space in ("NDIcrop", "NDI") for n in SCENARIOS]
    return targets + final_maps(rules.group_heatmaps.output)
