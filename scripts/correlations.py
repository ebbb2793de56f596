"""Correlation of the mean normalized value in the top-N mask with EDSS: the scenario with
the largest AUC drop at N = 40 (Tables III and IV)."""
import logging

import numpy as np
import pandas as pd

from gamer_mril import assessment as A
from gamer_mril.inputs import load_participants
from gamer_mril.io import atomic_path, atomic_write_json
from gamer_mril.jobs import job
from gamer_mril.layout import Session

i, o, p = snakemake.input, snakemake.output, snakemake.params
log = logging.getLogger("gamer_mril")
ids = {"subject": str, "session": str}
with job(snakemake) as j:
    inv = pd.read_csv(i.inverting, sep="\t")
    chosen = A.choose_scenario(inv, n=A.TABLE_IV_LEVEL)
    at = inv[inv["N"] == A.TABLE_IV_LEVEL].set_index("scenario")
    log.info("chosen scenario %d (AUC drop %.4f at N = %d)", chosen,
             at.loc[chosen, "auc_drop"], A.TABLE_IV_LEVEL)
    value_files = [Session.of_dir(d).mask_values for d in i.sessions]
    means = pd.concat([pd.read_csv(f, sep="\t", dtype=ids) for f in value_files],
                      ignore_index=True)
    means["session"] = means["subject"] + "\t" + means["session"]
    table = load_participants(i.participants)
    edss = pd.Series(table["edss"].to_numpy(float),
                     index=table["subject"] + "\t" + table["session"])
    corr = A.correlation_table(means, edss, chosen, n=A.TABLE_IV_LEVEL,
                               n_resamples=p.n_permutations, seed=p.seed)
    with atomic_path(o.long) as tmp:
        corr.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    t3 = A.table_iii(corr).reset_index()
    t3.insert(0, "chosen", t3["scenario"] == chosen)
    with atomic_path(o.table_iii) as tmp:
        t3.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    t4 = A.table_iv(corr)
    t4.index.name = "statistic"
    with atomic_path(o.table_iv) as tmp:
        t4.reset_index().to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    iv = corr[corr["table_iv"]].set_index("contrast")
    atomic_write_json(o.chosen, dict(
        scenario=int(chosen), level=A.TABLE_IV_LEVEL,
        rule="largest AUC drop (baseline AUC - AUC after inverting) at N = 40; ties to the "
             "lowest scenario",
        baseline_auc=float(at.loc[chosen, "baseline_auc"]),
        auc=float(at.loc[chosen, "auc"]), auc_drop=float(at.loc[chosen, "auc_drop"]),
        auc_drop_by_scenario={int(s): (None if not np.isfinite(d) else float(d))
                              for s, d in at["auc_drop"].items()},
        n_permutations=int(p.n_permutations), seed=int(p.seed),
        provenance=j.provenance(inputs={"values": value_files, "inverting": i.inverting,
                                        "participants": i.participants})))
    sub = means[(means["scenario"] == chosen) & (means["N"] == A.TABLE_IV_LEVEL)]
    wide = sub.pivot(index="session", columns="contrast", values="value")
    values = {c: wide[c].to_numpy(float) for c in A.CONTRASTS if c in wide}
    A.plot_correlations(values, edss.loc[wide.index].to_numpy(float), o.figure,
                        stats={c: (iv.loc[c, "rho"], iv.loc[c, "p"]) for c in values},
                        title=f"Scenario {chosen}, top-{A.TABLE_IV_LEVEL} mask: mean "
                              f"normalized value vs EDSS")
