"""Stack every session's preprocessed maps into one memory-mapped array."""
from gamer_mril import CONTRASTS
from gamer_mril.inputs import load_participants
from gamer_mril.jobs import job
from gamer_mril.training import build_cache

i = snakemake.input
with job(snakemake) as j:
    table = load_participants(i.table)
    maps = {"qT1": i.t1map, "MWF": i.mwfmap, "NDI": i.ndimap}
    by_session = {c: {p.split("/")[-1].split("_space-")[0]: p for p in maps[c]} for c in CONTRASTS}
    rows = []
    for r in table.itertuples():
        key = f"sub-{r.subject}_ses-{r.session}"
        rows.append(dict(subject=r.subject, session=r.session, age=r.age, edss=r.edss,
                         paths={c: by_session[c][key] for c in CONTRASTS}))
    build_cache(rows, snakemake.output.images.rsplit("/", 1)[0])
    for out in (snakemake.output.images, snakemake.output.index):
        j.sidecar(out, {"sessions": len(rows)})
