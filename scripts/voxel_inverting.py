"""AUC after voxel inverting over the assessment set, per scenario and N (Fig. 4)."""
import logging

import pandas as pd

from gamer_mril import assessment as A
from gamer_mril.io import atomic_path
from gamer_mril.jobs import job
from gamer_mril.layout import Session

i, o = snakemake.input, snakemake.output
log = logging.getLogger("gamer_mril")
ids = {"subject": str, "session": str}
with job(snakemake) as j:
    probs = pd.concat([pd.read_csv(Session.of_dir(d).inverting, sep="\t", dtype=ids)
                       for d in i.sessions], ignore_index=True)
    probs["key"] = probs["subject"] + "\t" + probs["session"]
    pred = pd.read_csv(i.predictions, sep="\t", dtype=ids)
    pred["key"] = pred["subject"] + "\t" + pred["session"]
    labels = dict(zip(pred["key"], pred["label"].astype(int)))
    base = probs[probs["scenario"] == 0].set_index("key")["prob"]
    diff = (base - pred.set_index("key")["prob"].reindex(base.index)).abs().max()
    log.info("baseline probability vs predictions.tsv: largest difference %.3g", diff)
    table = A.auc_table(probs.rename(columns={"session": "ses", "key": "session"}), labels)
    for _, r in table[table["N"] == A.TABLE_IV_LEVEL].iterrows():
        log.info("scenario %2d N=%d: AUC %.3f (drop %.3f)", r["scenario"], r["N"], r["auc"],
                 r["auc_drop"])
    with atomic_path(o.tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    A.plot_inverting(table, o.figure,
                     title=f"Voxel inverting, {table['n_sessions'].iloc[0]} sessions")
