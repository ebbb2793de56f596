"""The gradient baselines, saliency and integrated gradients
(docs/method.md#66-gradient-baselines), and beyond the paper SmoothGrad and integrated
gradients from a smoothed reference (docs/method.md#68-beyond-the-paper-scenarios-13-to-20;
interface in docs/lrp.md).

:func:`saliency` (``|dy/dx|``), :func:`integrated_gradients` (by default from the zero
images, age kept, midpoint Riemann sum; any reference, e.g. :func:`smoothed_reference`)
and :func:`smoothgrad` (the signed gradient averaged over noisy copies, batched) use
autograd on the original network in eval mode (a copy if it is in training mode); the
rectified units there have zero gradient at their kink, like the network the classifier
was trained as. No relevance rule is involved.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
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


def _positive_int(value, name):
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _chunk(x, count, chunk):
    """Copies of ``x`` per batch: at most 8 samples and about 2**20 voxels (default)."""
    if chunk is not None:
        return chunk
    b, voxels = x.shape[0], math.prod(x.shape[2:])
    return max(1, min(count, 8 // max(b, 1), 2**20 // max(b * voxels, 1)))


def _ig(net, x, age, targets, steps, chunk=None, reference=None):
    """IG of each target from ``reference`` (None: the zero images) to ``x``."""
    steps = _positive_int(steps, "steps")
    chunk = _chunk(x, steps, chunk)
    if reference is not None and reference.shape != x.shape:
        raise ValueError(f"reference of shape {tuple(reference.shape)}, input "
                         f"{tuple(x.shape)}")
    diff = x if reference is None else x - reference
    totals = [torch.zeros_like(x) for _ in targets]
    with progress_bar(steps, f"integrated gradients ({len(targets)} target(s))",
                      unit="point") as bar:
        for start in range(0, steps, chunk):
            alphas = [(i + 0.5) / steps for i in range(start, min(start + chunk, steps))]
            if reference is None:
                xs = torch.cat([x * alpha for alpha in alphas], dim=0)
            else:
                xs = torch.cat([reference + diff * alpha for alpha in alphas], dim=0)
            ages = age.repeat(len(alphas))
            for total, gx in zip(totals, _input_gradients(net, xs, ages, targets)):
                total += gx.reshape((len(alphas),) + tuple(x.shape)).sum(dim=0)
            bar.update(len(alphas))
    return [diff * total / steps for total in totals]


def _smoothgrad(net, x, age, targets, samples, noise, seed, chunk=None):
    """Mean signed gradient of each target over ``samples`` noisy copies of ``x``; copy
    ``k``'s noise is the ``k``-th draw ``noise * randn(x.shape)`` of a CPU generator
    seeded with ``seed`` (in x's dtype), whatever the batching."""
    samples = _positive_int(samples, "samples")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    chunk = _chunk(x, samples, chunk)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    totals = [torch.zeros_like(x) for _ in targets]
    with progress_bar(samples, f"SmoothGrad ({len(targets)} target(s))", unit="copy") as bar:
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            draws = [torch.randn(tuple(x.shape), generator=gen, dtype=x.dtype)
                     for _ in range(n)]
            xs = torch.cat([x + float(noise) * d.to(x.device) for d in draws], dim=0)
            for total, gx in zip(totals, _input_gradients(net, xs, age.repeat(n), targets)):
                total += gx.reshape((n,) + tuple(x.shape)).sum(dim=0)
            bar.update(n)
    return [total / samples for total in totals]


def smoothed_reference(x: torch.Tensor, sigma) -> torch.Tensor:
    """The reference of integrated gradients beyond the paper: ``x`` (B, L, D, H, W)
    smoothed by a Gaussian of ``sigma`` voxels (a number or one per axis) inside the
    brain, ``G(x m) / G(m)`` on the voxels of ``m`` and 0 elsewhere, where ``m`` holds
    the voxels at which any contrast is above 0 (the images are 0 outside the cerebrum).
    The kernel is cut at 4 sigma (``int(4 sigma + 0.5)`` voxels, scipy's default), the
    grid continued by zeros (which ``G(m)`` cancels)."""
    sig = (float(sigma),) * 3 if not isinstance(sigma, (tuple, list)) else \
        tuple(float(v) for v in sigma)
    if len(sig) != 3 or not all(v > 0 for v in sig):
        raise ValueError(f"sigma must be > 0, one number or three, got {sigma}")
    x = x.detach()
    b, c = x.shape[:2]
    mask = (x > 0).any(dim=1, keepdim=True).to(x.dtype)               # (B, 1, ...)
    vol = torch.cat([x * mask, mask], dim=1).reshape((b * (c + 1), 1) + tuple(x.shape[2:]))
    for axis, s in enumerate(sig):
        radius = int(4.0 * s + 0.5)
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / s) ** 2)
        shape, pad = [1, 1, 1], [0, 0, 0]
        shape[axis], pad[axis] = 2 * radius + 1, radius
        vol = F.conv3d(vol, (kernel / kernel.sum()).reshape([1, 1] + shape), padding=pad)
    vol = vol.reshape((b, c + 1) + tuple(x.shape[2:]))
    inv = torch.where(mask > 0, 1.0 / vol[:, -1:].clamp_min(1e-30), torch.zeros_like(mask))
    return torch.empty_like(x).copy_(vol[:, :-1] * inv)          # x's memory format


def integrated_gradients(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
                         target="logit", steps: int = 32, chunk: int | None = None,
                         reference: torch.Tensor | None = None) -> torch.Tensor:
    """Integrated gradients (B, L, D, H, W) of y = f(x) or a_l from ``reference`` x'
    (default: the zero images; age kept): ``(x - x') * mean_i dy/dx(x' + (i + 1/2) /
    steps * (x - x'))``. ``chunk``: path points evaluated in one batch (default: as many
    as keep the batch at 8 or fewer samples and about 2**20 voxels per contrast, i.e. 8
    at 48 x 48 x 56, 1 at 96 x 96 x 112)."""
    net = _eval_network(model)
    target = _parse_start(target, len(net.paths))
    ref = None if reference is None else reference.detach().to(x)
    return _ig(net, x.detach(), age.detach(), [target], steps, chunk, ref)[0]


def smoothgrad(model: nn.Module, x: torch.Tensor, age: torch.Tensor, target="logit",
               samples: int = 16, noise: float = 0.15, seed: int = 0,
               chunk: int | None = None) -> torch.Tensor:
    """SmoothGrad (B, L, D, H, W): the signed gradient of y = f(x) or a_l averaged over
    ``samples`` copies ``x + noise * eps_k`` (eps_k standard normal, ``noise`` a fraction
    of the images' [0, 1] range; no clipping; age kept), the copies batched as
    integrated gradients batches its points. The noise comes from ``seed`` alone: copy
    ``k`` is the ``k``-th ``torch.randn(x.shape)`` of a CPU generator seeded so."""
    net = _eval_network(model)
    target = _parse_start(target, len(net.paths))
    return _smoothgrad(net, x.detach(), age.detach(), [target], samples, noise, seed,
                       chunk)[0]
