"""The gradient baselines, saliency and integrated gradients
(docs/method.md#66-gradient-baselines; interface in docs/lrp.md).

:func:`saliency` (``|dy/dx|``) and :func:`integrated_gradients` (zero image baseline, age
kept, midpoint Riemann sum) use autograd on the original network in eval mode (a copy if
it is in training mode); the rectified units there have zero gradient at their kink, like
the network the classifier was trained as. No relevance rule is involved.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..progress import bar as progress_bar
from ._ops import _parse_start
from .canonize import CanonicalGamerMRIL


def _eval_network(model):
    if isinstance(model, CanonicalGamerMRIL) or not model.training:
        return model
    return copy.deepcopy(model).eval()


def _input_gradients(net, x, age, targets, diagonal_aw=False):
    """Gradients of each target w.r.t. x (B, L, D, H, W). ``targets``: "logit" or an int
    l (a_l), or "aw": channel l of the gradient of a_l (all l in one encoder backward)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        m = net.encode(xg)
        md = m.detach().requires_grad_(True)
        det = net.attend(md)
        _, logit = net.classify(det["n"], age)
        grads_m = []
        for t in targets:
            if t == "logit":
                gm, = torch.autograd.grad(logit.sum(), md, retain_graph=True)
            elif t == "aw":
                gm = torch.zeros_like(md)
                for l in range(md.shape[1]):
                    gl, = torch.autograd.grad(det["a"][:, l].sum(), md, retain_graph=True)
                    gm[:, l] = gl[:, l]
            else:
                gm, = torch.autograd.grad(det["a"][:, t].sum(), md, retain_graph=True)
            grads_m.append(gm)
        out = []
        for i, gm in enumerate(grads_m):
            gx, = torch.autograd.grad(m, xg, grad_outputs=gm,
                                      retain_graph=i < len(grads_m) - 1)
            out.append(gx.detach())
    return out


def saliency(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
             target="logit") -> torch.Tensor:
    """``|dy/dx|`` (B, L, D, H, W), y = f(x) (``"logit"``) or a_l (an int ``l``)."""
    net = _eval_network(model)
    target = _parse_start(target, len(net.paths))
    return _input_gradients(net, x, age, [target])[0].abs()


def _ig(net, x, age, targets, steps, chunk=None):
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    steps = int(steps)
    b = x.shape[0]
    if chunk is None:      # at most 8 samples and about 2**20 voxels per sample batch
        voxels = math.prod(x.shape[2:])
        chunk = max(1, min(steps, 8 // max(b, 1), 2**20 // max(b * voxels, 1)))
    totals = [torch.zeros_like(x) for _ in targets]
    with progress_bar(steps, f"integrated gradients ({len(targets)} target(s))",
                      unit="point") as bar:
        for start in range(0, steps, chunk):
            alphas = [(i + 0.5) / steps for i in range(start, min(start + chunk, steps))]
            xs = torch.cat([x * alpha for alpha in alphas], dim=0)
            ages = age.repeat(len(alphas))
            for total, gx in zip(totals, _input_gradients(net, xs, ages, targets)):
                total += gx.reshape((len(alphas),) + tuple(x.shape)).sum(dim=0)
            bar.update(len(alphas))
    return [x * total / steps for total in totals]


def integrated_gradients(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
                         target="logit", steps: int = 32, chunk: int | None = None
                         ) -> torch.Tensor:
    """Integrated gradients (B, L, D, H, W) of y = f(x) or a_l from the zero images (age
    kept): ``x * mean_i dy/dx((i + 1/2) / steps * x)``. ``chunk``: path points evaluated
    in one batch (default: as many as keep the batch at 8 or fewer samples and about
    2**20 voxels per contrast, i.e. 8 at 48 x 48 x 56, 1 at 96 x 96 x 112)."""
    net = _eval_network(model)
    target = _parse_start(target, len(net.paths))
    return _ig(net, x.detach(), age.detach(), [target], steps, chunk)[0]
