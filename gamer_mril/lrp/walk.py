"""The relevance walk through the whole network (docs/method.md#64-where-relevance-starts;
interface in docs/lrp.md).

Relevance starts either at the logit (value ``f(x)``: the classifier splits it between
``n`` and age, then down all three paths) or at the attention weight of contrast ``l``
(value ``a_l`` put on the score ``e_l``, through ``w``, the product rule, ``U`` and ``V``
into ``m_l`` and down path ``l`` only). Each ``n_k`` first splits its relevance over the
products ``a_l m_lk`` by the linear rule; softmax, tanh and sigmoid pass relevance
unchanged.

One forward pass of the canonized network (:mod:`gamer_mril.lrp.canonize`) stores, for
each path that will be walked, the prepared rule of every layer, so several walks share
it. Below ``m_l`` a walk is linear in the relevance of ``m_l``, so all walks through path
``l`` (e.g. two product rules x two starts for the scenario maps) run as one batch of
``k * B`` samples; the stored activations are broadcast, never copied. Walks batched so
must share the composite's rules below ``m``
(:meth:`~gamer_mril.lrp.composite.Composite.below_m`, a ValueError otherwise): they may
differ only in the product rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._ops import _parse_start
from .canonize import CanonicalGamerMRIL, canonize
from .composite import Composite, resolve


@dataclass
class Explanation:
    """Relevance of every voxel of every contrast (B, L, D, H, W), of age (B,), and the
    value the relevance started from (B,): f(x) or a_l."""
    voxels: torch.Tensor
    age: torch.Tensor
    start: torch.Tensor


def _from_logit(canon: CanonicalGamerMRIL, det: dict, rules: Composite):
    """From f(x): relevance at m (B, L, hidden), at the scores e (B, L), at age (B,), and
    f(x) (B,)."""
    m, a, n, z = (det[k] for k in ("m", "a", "n", "z"))
    inv = rules.linear.reciprocal
    r0 = det["logit"]
    c = canon.classifier.weight[0]
    r_z = z * c * (r0 * inv(z @ c)).unsqueeze(1)
    r_age = r_z[:, -1]
    contrib = a.unsqueeze(-1) * m                              # (B, L, hidden)
    r_prod = contrib * (r_z[:, :-1] * inv(n)).unsqueeze(1)
    r_m, r_gate = rules.product.split(m, a.unsqueeze(-1).expand_as(m), r_prod)
    r_e = r_gate.sum(dim=-1)                                   # softmax passes
    return r_m, r_e, r_age, r0


def _attention_level(canon: CanonicalGamerMRIL, det: dict, rules: Composite, r_m, r_e):
    """Relevance at m (B, L, hidden): ``r_m`` plus what the scores ``r_e`` send through
    ``w``, the product ``s * g`` and ``U``, ``V``."""
    m, s, g = det["m"], det["s"], det["g"]
    inv = rules.linear.reciprocal
    u = s * g
    w = canon.att_w.weight[0]
    e0 = u @ w
    r_u = u * w * (r_e * inv(e0)).unsqueeze(-1)
    r_s, r_g = rules.product.split(s, g, r_u)
    U, V = canon.att_U.weight, canon.att_V.weight
    r_m = r_m + m * ((r_s * inv(m @ U.t())) @ U)
    r_m = r_m + m * ((r_g * inv(m @ V.t())) @ V)
    return r_m


def _top_relevance(canon: CanonicalGamerMRIL, det: dict, start, rules: Composite):
    """Relevance at m (B, L, hidden), at age (B,), the start value (B,) and the paths
    to walk."""
    if start == "logit":
        r_m, r_e, r_age, r0 = _from_logit(canon, det, rules)
    else:
        a = det["a"]
        r0 = a[:, start]
        r_age = torch.zeros_like(r0)
        r_m = torch.zeros_like(det["m"])
        r_e = torch.zeros_like(a)
        r_e[:, start] = r0
    paths = range(det["a"].shape[1]) if start == "logit" else [start]
    if start != "logit" or rules.product.to_gate:
        r_m = _attention_level(canon, det, rules, r_m, r_e)
    return r_m, r_age, r0, list(paths)


def _prepare_inputs(canon, x, age):
    ref = canon.paths[0].head_weight
    x = x.detach().to(device=ref.device, dtype=ref.dtype)
    age = age.detach().to(device=ref.device)
    return x, age


def _shared_rules(composites) -> Composite:
    """The composite whose rules below m serve every walk of one pass (they must agree)."""
    composites = list(composites)
    if len({c.below_m() for c in composites}) > 1:
        raise ValueError("walks batched on one forward pass must share the rules below m "
                         "(first_conv, conv, linear, max_pool, avg_pool); run the "
                         "composites that differ there in separate calls")
    return composites[0]


def _lrp(canon: CanonicalGamerMRIL, x, age, requests) -> dict:
    """Relevance for every (start, rule) in ``requests`` (rule: a product rule name or a
    Composite) from one forward pass; the walks through a path are batched. Returns
    {(start, rule): Explanation}."""
    n_paths = len(canon.paths)
    requests = [(_parse_start(s, n_paths), r) for s, r in requests]
    resolved = [resolve(r) for _, r in requests]            # ValueError if unknown
    composites = {r: c for (_, r), c in zip(requests, resolved)}
    rules = _shared_rules(composites.values())
    walked = sorted({l for s, _ in requests
                     for l in (range(n_paths) if s == "logit" else [s])})
    with torch.no_grad():
        stores = {l: {} for l in walked}
        det = canon(x, age, return_details=True, stores=stores, rules=rules)
        tops = {req: _top_relevance(canon, det, req[0], composites[req[1]])
                for req in requests}
        voxels = {req: torch.zeros_like(x) for req in requests}
        for l in walked:
            reqs = [req for req in requests if l in tops[req][3]]
            r_m = torch.cat([tops[req][0][:, l] for req in reqs], dim=0)   # (k*B, hidden)
            r_x = canon.paths[l].relevance(stores[l], r_m)                 # (k*B, 1, ...)
            for i, req in enumerate(reqs):
                voxels[req][:, l] = r_x[i * x.shape[0]:(i + 1) * x.shape[0], 0]
            del stores[l]
    return {req: Explanation(voxels[req], tops[req][1], tops[req][2]) for req in requests}


def explain(model: nn.Module, x: torch.Tensor, age: torch.Tensor, start="logit",
            rule: str | Composite = "proposed") -> Explanation:
    """LRP relevance of the voxels and of age.

    ``start``: ``"logit"`` (relevance f(x) at the logit) or an int ``l`` (relevance a_l at
    the score e_l; only path ``l`` is walked, other channels and age get exactly 0).
    ``rule``: ``"proposed"`` or ``"lrp-all"`` (the paper's rules with that rule for the
    element-wise products), or a :class:`~gamer_mril.lrp.composite.Composite`.
    ``model``: a :class:`GamerMRIL` (canonized here; not modified) or a canonized model.
    """
    canon = canonize(model)
    x, age = _prepare_inputs(canon, x, age)
    return _lrp(canon, x, age, [(start, rule)])[(_parse_start(start, len(canon.paths)), rule)]


def conservation(explanations: dict, start: str, n_paths: int) -> dict:
    """The conservation record of one LRP walk, per batch element (lists of length B).

    ``explanations``: {start key: Explanation} of the walk (``"logit"``, or each path
    index for a start at the attention weights). ``start``: ``"f"`` or ``"aw"``. Returns
    ``start_value`` (f(x), or sum_l a_l), ``voxel_sums`` (per path: the relevance summed
    over that contrast's voxels, float64), ``age`` (the relevance of age), ``total``
    (voxels plus age) and ``relative_error`` = |start_value - total| / |start_value|.
    """
    if start == "f":
        e = explanations["logit"]
        start_value = e.start.double()
        sums = e.voxels.double().flatten(2).sum(-1)                    # (B, L)
        r_age = e.age.double()
    else:
        per = [explanations[l] for l in range(n_paths)]
        start_value = torch.stack([e.start.double() for e in per], 1).sum(1)
        sums = torch.stack([e.voxels[:, l].double().flatten(1).sum(-1)
                            for l, e in enumerate(per)], 1)
        r_age = torch.zeros_like(start_value)
    total = sums.sum(1) + r_age
    err = (start_value - total).abs() / start_value.abs().clamp_min(1e-30)
    return dict(start_value=start_value.tolist(), voxel_sums=sums.tolist(),
                age=r_age.tolist(), total=total.tolist(), relative_error=err.tolist())
