"""The relevance maps of one session, every requested scenario (METHOD.md 6)."""
import logging
from pathlib import Path

from gamer_mril.explain import choose_model, explain_session
from gamer_mril.jobs import job
from gamer_mril.split import read_split

i, o, p = snakemake.input, snakemake.output, snakemake.params
with job(snakemake) as j:
    dirs = {int(Path(w).parent.name.split("-", 1)[1]): Path(w).parent for w in i.weights}
    split = None if p.frozen_models else read_split(i.split)
    fold, model_dir = choose_model(dirs, j.subject, j.session_id, split)
    logging.getLogger("gamer_mril").info("explained by the model of fold %d (%s)", fold, model_dir)
    crop = {n: o[f"crop_{n:02d}"] for n in p.scenarios}
    ndi = {n: o[f"ndi_{n:02d}"] for n in p.scenarios}
    facts = explain_session([i.t1map, i.mwfmap, i.ndimap], p.age, model_dir, i.box, crop, ndi,
                            ig_steps=p.ig_steps, device="auto",
                            log=logging.getLogger("gamer_mril").info)
    common = {k: v for k, v in facts.items() if k != "scenarios"}
    inputs = {k: v for k, v in dict(i.items()).items() if k not in ("weights", "meta")}
    inputs["model"] = [str(Path(model_dir) / "model.safetensors"), str(Path(model_dir) / "model.json")]
    for n in p.scenarios:
        scenario_facts = dict(common, scenario=facts["scenarios"][n], fold=fold)
        for path in (crop[n], ndi[n]):
            j.sidecar(path, scenario_facts, inputs=inputs)
