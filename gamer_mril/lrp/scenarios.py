"""The twelve relevance scenarios of the paper's Table I, the eight beyond it, and their
maps (docs/method.md#65-combined-maps, docs/method.md#67-the-twelve-scenarios,
docs/method.md#68-beyond-the-paper-scenarios-13-to-20; interface in docs/lrp.md).

:data:`SCENARIOS` numbers the rows as the paper does (1-12), then 13-20: SmoothGrad, LRP
with the gamma composite and with the gamma composite and a flat first layer, integrated
gradients from a smoothed reference, each from the attention weights and from f(x).
:func:`scenario_maps` computes the requested ones: the LRP scenarios of one composite
family from one forward pass and batched walks (:mod:`gamer_mril.lrp.walk`), the saliency
ones from one gradient pass, the integrated gradients ones from each path point's, the
SmoothGrad ones from each noisy copy's (:mod:`gamer_mril.lrp.gradients`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..progress import bar as progress_bar
from ..settings import (GAMMA, PAPER_SCENARIOS, SMOOTHGRAD_NOISE, SMOOTHGRAD_SAMPLES,
                        SMOOTHGRAD_SEED, scenario_numbers)
from .canonize import canonize
from .composite import gamma_composite, resolve
from .gradients import (_eval_network, _ig, _input_gradients, _smoothgrad,
                        smoothed_reference)
from .rules import PRODUCT_RULES
from .walk import _lrp, _prepare_inputs, conservation


@dataclass(frozen=True)
class Scenario:
    """One row of Table I (1-12) or beyond it (13-20). ``start``: "aw" (attention
    weights) or "f" (the logit); ``method``: "lrp", "saliency", "ig" or "smoothgrad";
    ``rule``: the product rule, "proposed" or "lrp-all" (LRP), else None; ``kind``:
    "individual" (B, L, D, H, W) or "combined" (B, D, H, W); ``composite`` (LRP): the
    rules below the attention, "paper" (:data:`~gamer_mril.lrp.composite.PAPER`),
    "gamma" or "gamma-flat" (:func:`~gamer_mril.lrp.composite.gamma_composite`);
    ``reference`` (integrated gradients): "zero" (black images) or "smoothed"
    (:func:`~gamer_mril.lrp.gradients.smoothed_reference`)."""
    number: int
    start: str
    method: str
    rule: str | None
    kind: str
    name: str
    composite: str | None = None
    reference: str | None = None


def _scenarios() -> dict:
    rows = {}
    number = 1
    for start in ("aw", "f"):
        for kind in ("individual", "combined"):
            for rule in PRODUCT_RULES:
                label = {"aw": "AW", "f": "f(x)"}[start]
                rows[number] = Scenario(number, start, "lrp", rule, kind,
                                        f"LRP {label} {rule} {kind}", composite="paper")
                number += 1
    # numbering of docs/method.md#67-the-twelve-scenarios: 1 AW/proposed/ind,
    # 2 AW/LRP-all/ind, 3 AW/proposed/comb, ...
    rows[9] = Scenario(9, "aw", "saliency", None, "individual", "saliency AW")
    rows[10] = Scenario(10, "aw", "ig", None, "individual", "integrated gradients AW",
                        reference="zero")
    rows[11] = Scenario(11, "f", "saliency", None, "individual", "saliency f(x)")
    rows[12] = Scenario(12, "f", "ig", None, "individual", "integrated gradients f(x)",
                        reference="zero")
    # beyond the paper (docs/method.md#68-beyond-the-paper-scenarios-13-to-20), each
    # from the attention weights, then from f(x); individual maps
    beyond = (
        dict(method="smoothgrad", rule=None, name="SmoothGrad {}"),
        dict(method="lrp", rule="proposed", composite="gamma",
             name="LRP {} gamma proposed individual"),
        dict(method="lrp", rule="proposed", composite="gamma-flat",
             name="LRP {} gamma flat-first proposed individual"),
        dict(method="ig", rule=None, reference="smoothed",
             name="integrated gradients from a smoothed reference {}"),
    )
    for row in beyond:
        for start, label in (("aw", "AW"), ("f", "f(x)")):
            number = max(rows) + 1
            rows[number] = Scenario(number, start, kind="individual",
                                    **dict(row, name=row["name"].format(label)))
    return rows


#: {number: Scenario}: 1-12 numbered as in the paper's Table I
#: (docs/method.md#67-the-twelve-scenarios), 13-20 beyond it
#: (docs/method.md#68-beyond-the-paper-scenarios-13-to-20).
SCENARIOS = _scenarios()


def _request_rule(sc: Scenario, gamma: float):
    """What :func:`~gamer_mril.lrp.walk._lrp` is asked for: the product rule's name for
    the paper's composite, else the Composite object."""
    if sc.composite == "paper":
        return sc.rule
    return gamma_composite(gamma, flat_first=sc.composite == "gamma-flat", product=sc.rule)


def _lrp_maps(model, x, age, lrp_rows, record, gamma=GAMMA) -> dict:
    """{number: map} of the LRP scenarios ``lrp_rows``: one forward pass per family of
    composites that share their rules below m (the paper's first)."""
    canon = canonize(model)
    xc, agec = _prepare_inputs(canon, x, age)
    n_paths = len(canon.paths)
    families = {}
    for sc in lrp_rows:
        rule = _request_rule(sc, gamma)
        families.setdefault(resolve(rule).below_m(), []).append((sc, rule))
    out = {}
    for rows in families.values():
        wanted = sorted({(sc.start, rule) for sc, rule in rows},
                        key=lambda t: (t[0], str(t[1])))
        requests = []
        for start, rule in wanted:
            requests += [("logit", rule)] if start == "f" else [(l, rule)
                                                               for l in range(n_paths)]
        maps = _lrp(canon, xc, agec, requests)
        for start, rule in wanted:
            mine = [sc for sc, r in rows if (sc.start, r) == (start, rule)]
            if record is not None:
                walk = {k: e for (k, r), e in maps.items() if r == rule and
                        ((k == "logit") == (start == "f"))}
                kept = conservation(walk, start, n_paths)
                for sc in mine:
                    record[sc.number] = kept
            if start == "f":
                individual = maps[("logit", rule)].voxels
            else:
                individual = torch.stack([maps[(l, rule)].voxels[:, l]
                                          for l in range(n_paths)], dim=1)
            for sc in mine:
                out[sc.number] = (individual if sc.kind == "individual"
                                  else (individual * xc).sum(dim=1))
    return out


def _gradient_maps(net, x, age, rows, method, settings) -> dict:
    """{number: map} of the saliency, integrated-gradients or SmoothGrad scenarios
    ``rows`` (``method``: "saliency", "ig", "ig-smoothed", "smoothgrad")."""
    targets = ["aw" if sc.start == "aw" else "logit" for sc in rows]
    x, age = x.detach(), age.detach()
    if method == "saliency":
        results = [gx.abs() for gx in _input_gradients(net, x, age, targets)]
    elif method == "ig":
        results = _ig(net, x, age, targets, settings["ig_steps"])
    elif method == "ig-smoothed":
        reference = smoothed_reference(x, settings["ig_reference_sigma"])
        results = _ig(net, x, age, targets, settings["ig_steps"], reference=reference)
    else:
        results = _smoothgrad(net, x, age, targets, settings["smoothgrad_samples"],
                              settings["smoothgrad_noise"], settings["smoothgrad_seed"])
    return {sc.number: res for sc, res in zip(rows, results)}


def _gradient_method(sc: Scenario) -> str | None:
    if sc.method == "ig":
        return "ig" if sc.reference == "zero" else "ig-smoothed"
    return sc.method if sc.method in ("saliency", "smoothgrad") else None


def scenario_maps(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
                  scenarios: Iterable[int] = PAPER_SCENARIOS, ig_steps: int = 32,
                  progress: Callable[[str], None] | None = None,
                  record: dict | None = None, *, gamma: float = GAMMA,
                  smoothgrad_samples: int = SMOOTHGRAD_SAMPLES,
                  smoothgrad_noise: float = SMOOTHGRAD_NOISE,
                  smoothgrad_seed: int = SMOOTHGRAD_SEED,
                  ig_reference_sigma=None) -> dict:
    """Maps of the requested scenarios (default: the paper's twelve): {number: tensor},
    individual (B, L, D, H, W), combined (B, D, H, W) = sum_l R_l * x_l. The LRP
    scenarios of one composite family share one forward pass and batched walks; saliency
    scenarios share one forward pass, IG ones each path point's, SmoothGrad ones each
    noisy copy's. ``gamma``: the gamma rule's (scenarios 15-18); ``smoothgrad_*``: the
    copies, the noise's sd (a fraction of the [0, 1] range) and the seed of the noise
    (13, 14); ``ig_reference_sigma``: the smoothed reference's Gaussian in voxels, a
    number or one per axis (19, 20; required for them).
    ``progress``, if given, is called with a short message after each stage; a progress
    bar over the scenarios goes to the ``gamer_mril`` logger (:mod:`gamer_mril.progress`).
    ``record``, if given, receives {number: :func:`~gamer_mril.lrp.walk.conservation` of
    the walk} for the LRP scenarios (a combined map shares its individual map's walk)."""
    numbers = scenario_numbers(scenarios)
    chosen = [SCENARIOS[n] for n in numbers]
    if ig_reference_sigma is None and any(sc.reference == "smoothed" for sc in chosen):
        raise ValueError("scenarios from the smoothed reference need ig_reference_sigma")
    settings = dict(ig_steps=ig_steps, ig_reference_sigma=ig_reference_sigma,
                    smoothgrad_samples=smoothgrad_samples,
                    smoothgrad_noise=smoothgrad_noise, smoothgrad_seed=smoothgrad_seed)
    bar = progress_bar(len(numbers), "relevance scenarios", unit="map")

    def note(message, done):
        bar.update(done)
        if progress is not None:
            progress(message)

    out = {}
    lrp_rows = [sc for sc in chosen if sc.method == "lrp"]
    if lrp_rows:
        out.update(_lrp_maps(model, x, age, lrp_rows, record, gamma))
        note(f"LRP scenarios {[sc.number for sc in lrp_rows]} done", len(lrp_rows))
    grad_rows = [sc for sc in chosen if _gradient_method(sc) is not None]
    if grad_rows:
        net = _eval_network(model)
        for method in ("saliency", "ig", "ig-smoothed", "smoothgrad"):
            rows = [sc for sc in grad_rows if _gradient_method(sc) == method]
            if rows:
                out.update(_gradient_maps(net, x, age, rows, method, settings))
                note(f"{method} scenarios {[sc.number for sc in rows]} done", len(rows))
    bar.close()
    return {n: out[n] for n in numbers}
