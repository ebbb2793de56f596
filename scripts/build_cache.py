"""Stack every session's preprocessed maps into one memory-mapped array."""
from gamer_mril import CONTRASTS
from gamer_mril.inputs import load_participants
from gamer_mril.jobs import job
from gamer_mril.layout import KEY, Session
from gamer_mril.training import build_cache

i = snakemake.input
with job(snakemake) as j:
    table = load_participants(i.table)
    folders = {(s.subject, s.session): s for s in map(Session.of_dir, i.anat)}
    rows = [dict(subject=r.subject, session=r.session, age=r.age, edss=r.edss,
                 paths=folders[(str(r.subject), str(r.session))].preproc_maps)
            for r in table.itertuples()]
    build_cache(rows, snakemake.output.images.rsplit("/", 1)[0])
    inputs = {"table": i.table}
    inputs.update({KEY[c]: [r["paths"][c] for r in rows] for c in CONTRASTS})
    for out in (snakemake.output.images, snakemake.output.index):
        j.sidecar(out, {"sessions": len(rows)}, inputs=inputs)
