"""The twelve relevance scenarios of the paper's Table I and their maps
(docs/method.md#65-combined-maps, docs/method.md#67-the-twelve-scenarios; interface in
docs/lrp.md).

:data:`SCENARIOS` numbers the rows as the paper does; :func:`scenario_maps` computes the
requested ones: every LRP scenario from one forward pass and batched walks
(:mod:`gamer_mril.lrp.walk`), the saliency ones from one gradient pass, the integrated
gradients ones from each path point's (:mod:`gamer_mril.lrp.gradients`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..progress import bar as progress_bar
from ..settings import scenario_numbers
from .canonize import canonize
from .gradients import _eval_network, _ig, _input_gradients
from .rules import PRODUCT_RULES
from .walk import _lrp, _prepare_inputs, conservation


@dataclass(frozen=True)
class Scenario:
    """One row of Table I. ``start``: "aw" (attention weights) or "f" (the logit);
    ``method``: "lrp", "saliency" or "ig"; ``rule``: "proposed", "lrp-all" or None;
    ``kind``: "individual" (B, L, D, H, W) or "combined" (B, D, H, W)."""
    number: int
    start: str
    method: str
    rule: str | None
    kind: str
    name: str


def _scenarios() -> dict:
    rows = {}
    number = 1
    for start in ("aw", "f"):
        for kind in ("individual", "combined"):
            for rule in PRODUCT_RULES:
                label = {"aw": "AW", "f": "f(x)"}[start]
                rows[number] = Scenario(number, start, "lrp", rule, kind,
                                        f"LRP {label} {rule} {kind}")
                number += 1
    # numbering of docs/method.md#67-the-twelve-scenarios: 1 AW/proposed/ind,
    # 2 AW/LRP-all/ind, 3 AW/proposed/comb, ...
    rows[9] = Scenario(9, "aw", "saliency", None, "individual", "saliency AW")
    rows[10] = Scenario(10, "aw", "ig", None, "individual", "integrated gradients AW")
    rows[11] = Scenario(11, "f", "saliency", None, "individual", "saliency f(x)")
    rows[12] = Scenario(12, "f", "ig", None, "individual", "integrated gradients f(x)")
    return rows


#: {number: Scenario}, numbered as in the paper's Table I
#: (docs/method.md#67-the-twelve-scenarios).
SCENARIOS = _scenarios()


def _lrp_maps(model, x, age, lrp_rows, record) -> dict:
    """{number: map} of the LRP scenarios ``lrp_rows``, all from one forward pass."""
    canon = canonize(model)
    xc, agec = _prepare_inputs(canon, x, age)
    n_paths = len(canon.paths)
    wanted = sorted({(sc.start, sc.rule) for sc in lrp_rows})
    requests = []
    for start, rule in wanted:
        requests += [("logit", rule)] if start == "f" else [(l, rule)
                                                           for l in range(n_paths)]
    maps = _lrp(canon, xc, agec, requests)
    out = {}
    for start, rule in wanted:
        if record is not None:
            walk = {k: e for (k, r), e in maps.items() if r == rule and
                    ((k == "logit") == (start == "f"))}
            kept = conservation(walk, start, n_paths)
            for sc in lrp_rows:
                if (sc.start, sc.rule) == (start, rule):
                    record[sc.number] = kept
        if start == "f":
            individual = maps[("logit", rule)].voxels
        else:
            individual = torch.stack([maps[(l, rule)].voxels[:, l]
                                      for l in range(n_paths)], dim=1)
        for sc in lrp_rows:
            if (sc.start, sc.rule) == (start, rule):
                out[sc.number] = (individual if sc.kind == "individual"
                                  else (individual * xc).sum(dim=1))
    return out


def _gradient_maps(net, x, age, rows, method, ig_steps) -> dict:
    """{number: map} of the saliency or integrated-gradients scenarios ``rows``."""
    targets = ["aw" if sc.start == "aw" else "logit" for sc in rows]
    if method == "saliency":
        results = [gx.abs() for gx in _input_gradients(net, x.detach(), age.detach(), targets)]
    else:
        results = _ig(net, x.detach(), age.detach(), targets, ig_steps)
    return {sc.number: res for sc, res in zip(rows, results)}


def scenario_maps(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
                  scenarios: Iterable[int] = range(1, 13), ig_steps: int = 32,
                  progress: Callable[[str], None] | None = None,
                  record: dict | None = None) -> dict:
    """Maps of the requested scenarios: {number: tensor}, individual (B, L, D, H, W),
    combined (B, D, H, W) = sum_l R_l * x_l. All LRP scenarios share one forward pass and
    batched walks; saliency scenarios share one forward pass, IG ones each path point's.
    ``progress``, if given, is called with a short message after each stage; a progress
    bar over the scenarios goes to the ``gamer_mril`` logger (:mod:`gamer_mril.progress`).
    ``record``, if given, receives {number: :func:`~gamer_mril.lrp.walk.conservation` of
    the walk} for the LRP scenarios (a combined map shares its individual map's walk)."""
    numbers = scenario_numbers(scenarios)
    bar = progress_bar(len(numbers), "relevance scenarios", unit="map")

    def note(message, done):
        bar.update(done)
        if progress is not None:
            progress(message)

    chosen = [SCENARIOS[n] for n in numbers]
    out = {}
    lrp_rows = [sc for sc in chosen if sc.method == "lrp"]
    if lrp_rows:
        out.update(_lrp_maps(model, x, age, lrp_rows, record))
        note(f"LRP scenarios {[sc.number for sc in lrp_rows]} done", len(lrp_rows))
    grad_rows = [sc for sc in chosen if sc.method in ("saliency", "ig")]
    if grad_rows:
        net = _eval_network(model)
        for method in ("saliency", "ig"):
            rows = [sc for sc in grad_rows if sc.method == method]
            if rows:
                out.update(_gradient_maps(net, x, age, rows, method, ig_steps))
                note(f"{method} scenarios {[sc.number for sc in rows]} done", len(rows))
    bar.close()
    return {n: out[n] for n in numbers}
