"""The held-out test sessions scored by one fold's model."""
from pathlib import Path

from gamer_mril.io import atomic_write_text
from gamer_mril.jobs import job
from gamer_mril.split import read_split
from gamer_mril.training import load_model, open_cache, predict, resolve_device

with job(snakemake) as j:
    device = resolve_device("auto")
    cache = open_cache(Path(snakemake.input.images).parent)
    split = read_split(snakemake.input.split)
    test = split[split["set"] == "test"]
    model = load_model(Path(snakemake.input.weights).parent, device=device)
    pred = predict(model, cache, cache.rows_for(zip(test.subject, test.session)), device=device)
    atomic_write_text(snakemake.output.tsv, pred.to_csv(sep="\t", index=False))
