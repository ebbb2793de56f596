"""Layer-wise relevance propagation (LRP) for the GAMER-MRIL network, plus two baselines.

The engine follows docs/method.md#6-layer-wise-relevance-propagation and the interface
of ``docs/lrp.md``. It is plain PyTorch: it knows the layout of :mod:`gamer_mril.network`
and walks it module by module, without hooks and without third-party attribution
libraries.

Canonization
------------
LRP rules are defined for linear maps followed by element-wise non-linearities, so the
batch normalisations are first rewritten away (:func:`canonize`; a copy, the model given
is not touched). Write a BN in eval mode as ``bn(x) = a (x - mu) + beta`` per channel,
with ``a = gamma / sigma`` and ``sigma = sqrt(running_var + eps)``.

* A BN that directly follows a conv is folded into it: the weight rows are scaled by
  ``a`` and ``beta - a mu`` becomes a bias. This happens to the stem's BN (after the stem
  conv) and to the second BN of every dense layer (after the 1x1x1 bottleneck conv).
* Every other BN starts a chain ``BN -> ReLU -> linear map`` (the first BN of a dense
  layer, the BN of a transition, the BN of the head, whose linear map is the FC after the
  flatten). For ``gamma != 0``, ``relu(a (x - t))`` with the threshold
  ``t = mu - beta sigma / gamma`` equals ``a (max(x, t) - t)`` when ``gamma > 0`` and
  ``a (min(x, t) - t)`` when ``gamma < 0``. So the chain is a sign-aware *clamp* of the
  input followed by the linear map with its input columns scaled by ``a``
  (``W diag(gamma / sigma)``) and a constant ``-W diag(a) t = W (beta - a mu)`` that is a
  bias. A channel with ``gamma == 0`` outputs the constant ``relu(beta)`` whatever its
  input: its clamp is the identity, its weight column is zero and ``W relu(beta)`` joins
  the bias, so the channel takes no relevance.

The canonized network (:class:`CanonicalGamerMRIL`) computes the same function as the
original in eval mode (up to rounding) and is what the relevance walk reads.

Rules
-----
Biases are ignored by every rule: a linear map's contributions are ``z_ij = x_i w_ij`` and
its output relevance ``R_j`` is split over them, so with all biases zero the relevance is
conserved. A zero denominator gives zero relevance.

* the first conv of each path (the stem conv with its BN folded in): z^B with bounds
  ``[0, 1]`` (the range of the normalised images), on the replicate-padded input; the
  relevance of a padded voxel goes back to the voxel it copies (adjoint of the padding);
* every other conv: alpha=1, beta=0 (only products ``x_i w_ij > 0`` count);
* every fully connected layer (head FC, U, V, w, classifier): epsilon, with the stabiliser
  ``1e-8 * sign(z)`` (sign(0) = +1);
* max pooling: all to the winner that ``max_pool3d`` reports (ties as torch breaks
  them); average pooling: in proportion to its inputs, i.e. the transition conv's actual
  outputs (bias constant included; the pool itself has no bias); concatenation: each
  part keeps its own slice; ReLU, the clamp, tanh, sigmoid and softmax pass relevance
  unchanged;
* products ``s * g`` (attention) and ``a_l * m_l`` (the attention-weighted sum ``n``):
  *proposed* splits ``R`` in proportion to ``|s|`` and ``|g|``; *LRP-all* gives all of it
  to the signal (``s``; ``m_l``) and none to the gate (``g``; ``a_l``). Each ``n_k`` first
  splits its relevance over the products ``a_l m_lk`` by the epsilon rule.

Relevance starts either at the logit (value ``f(x)``: the classifier splits it between
``n`` and age, then down all three paths) or at the attention weight of contrast ``l``
(value ``a_l`` put on the score ``e_l``, through ``w``, the product rule, ``U`` and ``V``
into ``m_l`` and down path ``l`` only).

How it is computed
------------------
One forward pass of the canonized network stores, for each path that will be walked, the
inputs of every rule and the reciprocal of every denominator, so several relevance walks
share one forward pass. Below ``m_l`` the walk is linear in the relevance of ``m_l``, so
all walks through path ``l`` (two product rules x two starts in :func:`scenario_maps`) run
as one batch of ``k * B`` samples; the stored activations are broadcast, never copied. A
conv rule is the adjoint of the conv (a transposed convolution; for stride 1 computed as
a matrix product or a flipped-kernel conv, which are much faster on CPUs) applied to
``R / z``, times the input; for alpha1-beta0 the positive and negative parts of the
weights are stacked as one weight, and on a non-negative input the forward output and the
rule's denominator come from one conv. Pooling rules are a scatter (max) or an expansion
(average). On a 48 x 48 x 56 input each LRP scenario costs about 0.6 of one training
forward+backward pass (``bench/lrp.py``). All tensors stay on the device and in the dtype
of the model.

Baselines
---------
:func:`saliency` (``|dy/dx|``) and :func:`integrated_gradients` (zero image baseline, age
kept, midpoint Riemann sum) use autograd on the original network in eval mode (a copy if
it is in training mode); the rectified units there have zero gradient at their kink, like
the network the classifier was trained as.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .network import GamerMRIL
from .progress import bar as progress_bar

#: Stabiliser of the epsilon rule: ``z + EPSILON * sign(z)``, ``sign(0) = +1``.
EPSILON = 1e-8

#: The two rules for element-wise products (docs/method.md#63-element-wise-products).
PRODUCT_RULES = ("proposed", "lrp-all")

#: Bounds of the z^B rule on the first conv of every path (normalised images in [0, 1]).
ZB_LOW, ZB_HIGH = 0.0, 1.0


# ======================================================================================
# small helpers
# ======================================================================================
def _triple(v) -> tuple:
    if isinstance(v, numbers.Integral):
        return (int(v),) * 3
    v = tuple(int(i) for i in v)
    if len(v) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v}")
    return v


def _safe_reciprocal(den: torch.Tensor) -> torch.Tensor:
    """1 / den, and 0 where den == 0 (a zero denominator gives zero relevance)."""
    inv = den.reciprocal()
    return inv.masked_fill_(inv.isinf(), 0.0)      # 1/0 (and 1/denormal) -> 0


def _stabilized_reciprocal(z: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / (z + eps * sign(z)) with sign(0) = +1; 0 if that is still 0 (eps = 0, z = 0)."""
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return _safe_reciprocal(z + eps * sign)


def _bmul(r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``r`` (k*B, ...) times ``t`` (B, ...) broadcast over the k stacked walks."""
    b = t.shape[0]
    k = r.shape[0] // b
    if k * b != r.shape[0]:
        raise ValueError(f"relevance batch {r.shape[0]} is not a multiple of {b}")
    if k == 1:
        return r * t
    return (r.reshape((k, b) + tuple(r.shape[1:])) * t).reshape(r.shape)


def _pad_replicate_adjoint(r: torch.Tensor, pad: tuple) -> torch.Tensor:
    """Adjoint of ``F.pad(x, ..., mode="replicate")`` over the last three dims: the
    relevance of every padded voxel is added to the border voxel it copies."""
    for dim, p in zip((2, 3, 4), pad):
        if p == 0:
            continue
        n = r.shape[dim]
        core = r.narrow(dim, p, n - 2 * p).clone()
        core.narrow(dim, 0, 1).add_(r.narrow(dim, 0, p).sum(dim, keepdim=True))
        core.narrow(dim, n - 2 * p - 1, 1).add_(r.narrow(dim, n - p, p).sum(dim, keepdim=True))
        r = core
    return r


def _pad6(pad: tuple) -> tuple:
    """F.pad's argument (last dim first, both sides) for per-dim (D, H, W) padding."""
    return (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0])


def _output_padding(in_size, out_size, kernel, stride, padding) -> tuple:
    return tuple(int(i - ((o - 1) * s - 2 * p + k))
                 for i, o, k, s, p in zip(in_size, out_size, kernel, stride, padding))


class _Adjoint:
    """The adjoint (transposed convolution) of ``conv3d(., weight, stride, padding)``,
    mapping (N, O, ...) to (N, C, ...) on an input of spatial size ``in_size``.

    ``conv_transpose3d`` is slow on some CPU builds, so for stride 1 the same linear map
    is computed another way: a matrix product for 1x1x1 kernels; otherwise, when the
    result has fewer channels than ``s`` (e.g. the stem: 16 -> 1 channel), a matrix
    product to one map per kernel offset followed by shifted additions; else a conv3d
    with the flipped kernel.
    """

    def __init__(self, weight, stride, padding, in_size, out_size):
        self.weight, self.stride, self.padding = weight, stride, padding
        self.kernel = tuple(weight.shape[2:])
        self.in_size = tuple(in_size)
        self.output_padding = _output_padding(in_size, out_size, self.kernel, stride,
                                              padding)
        o, c = weight.shape[:2]
        self.mode = "transpose"
        if stride == (1, 1, 1) and all(p <= k - 1 for p, k in zip(padding, self.kernel)):
            if self.kernel == (1, 1, 1):
                self.mode = "matmul"
                self.matrix = weight.reshape(o, c).t().contiguous()           # (C, O)
            elif c < o:
                self.mode = "shift"
                self.matrix = weight.permute(1, 2, 3, 4, 0).reshape(-1, o).contiguous()
            else:
                self.mode = "flip"
                self.flipped = weight.flip(2, 3, 4).transpose(0, 1).contiguous()
                self.flip_padding = tuple(k - 1 - p for k, p in zip(self.kernel, padding))

    def __call__(self, s):
        n = s.shape[0]
        c = self.weight.shape[1]
        if self.mode == "matmul":
            out = torch.matmul(self.matrix, s.reshape(n, s.shape[1], -1))
            return out.reshape((n, c) + tuple(s.shape[2:]))
        if self.mode == "flip":
            return F.conv3d(s, self.flipped, padding=self.flip_padding)
        if self.mode == "shift":
            kd, kh, kw = self.kernel
            d, h, w = s.shape[2:]
            q = torch.matmul(self.matrix, s.reshape(n, s.shape[1], -1))
            q = q.reshape(n, c, kd, kh, kw, d, h, w)
            full = s.new_zeros((n, c, d + kd - 1, h + kh - 1, w + kw - 1))
            for a in range(kd):
                for b in range(kh):
                    for e in range(kw):
                        full[:, :, a:a + d, b:b + h, e:e + w] += q[:, :, a, b, e]
            pd, ph, pw = self.padding
            return full[:, :, pd:pd + self.in_size[0], ph:ph + self.in_size[1],
                        pw:pw + self.in_size[2]]
        return F.conv_transpose3d(s, self.weight, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding)


# ======================================================================================
# single-layer rules (prepared once per forward, applied to any number of walks)
# ======================================================================================
class _ConvRule:
    """A conv rule prepared on one input: ``R_in = sum_t c_t * T(R / den, w_t)``.

    ``T`` is the adjoint of the conv (a transposed convolution). The rule is a list of
    terms ``(c_t, w_t)`` with ``c_t`` a tensor (an input of the conv) or a number; for
    alpha1-beta0 they are ``(x+, w+)`` and ``(x-, w-)``, for z^B ``(x, w)``,
    ``(-low, w+)`` and ``(-high, w-)``. All the weights are stacked into one adjoint.
    ``den`` is the rule's denominator (0 gives 0); with ``replicate_pad`` the inputs are
    the padded input and the result is folded back by the adjoint of the padding.
    """

    def __init__(self, terms, den, in_size, stride, conv_padding, replicate_pad):
        self.inputs = [t for t, _ in terms]
        self.channels = [w.shape[1] for _, w in terms]
        weight = torch.cat([w for _, w in terms], dim=1) if len(terms) > 1 else terms[0][1]
        self.adjoint = _Adjoint(weight, stride, conv_padding, in_size, tuple(den.shape[2:]))
        self.inv_den = _safe_reciprocal(den)
        self.replicate_pad = replicate_pad

    def __call__(self, relevance: torch.Tensor) -> torch.Tensor:
        t = self.adjoint(_bmul(relevance, self.inv_den))
        out = None
        start = 0
        for x_t, c in zip(self.inputs, self.channels):
            part = t[:, start:start + c] if len(self.channels) > 1 else t
            start += c
            part = _bmul(part, x_t) if isinstance(x_t, torch.Tensor) else part * x_t
            out = part if out is None else out + part
        if self.replicate_pad is not None:
            out = _pad_replicate_adjoint(out, self.replicate_pad)
        return out


def _conv_geometry(x, weight, stride, padding, padding_mode):
    """(padded input, stride, padding left to the conv, replicate padding or None)."""
    stride, padding = _triple(stride), _triple(padding)
    if padding_mode not in ("zeros", "replicate"):
        raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
    if x.ndim != 5 or weight.ndim != 5 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"expected x (B, C, D, H, W) and weight (O, C, k, k, k), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if padding_mode == "replicate" and any(padding):
        xp = F.pad(x, _pad6(padding), mode="replicate")
        return xp, stride, (0, 0, 0), padding
    return x, stride, padding, None


def _alpha1beta0_prepared(xp, weight, stride, conv_pad, rep, nonnegative=None, den=None):
    """alpha1-beta0 on the (already padded) input ``xp``; ``den``: the sum of positive
    contributions if known (only when ``nonnegative``)."""
    if nonnegative is None:
        nonnegative = bool((xp >= 0).all())
    w_pos = weight.clamp(min=0)
    if nonnegative:
        if den is None:
            den = F.conv3d(xp, w_pos, stride=stride, padding=conv_pad)
        terms = [(xp, w_pos)]
    else:
        w_neg = weight.clamp(max=0)
        x_pos, x_neg = xp.clamp(min=0), xp.clamp(max=0)
        den = (F.conv3d(x_pos, w_pos, stride=stride, padding=conv_pad)
               + F.conv3d(x_neg, w_neg, stride=stride, padding=conv_pad))
        terms = [(x_pos, w_pos), (x_neg, w_neg)]
    return _ConvRule(terms, den, xp.shape[2:], stride, conv_pad, rep)


def _alpha1beta0_rule(x, weight, stride=1, padding=0, padding_mode="zeros",
                      nonnegative=None) -> _ConvRule:
    """Prepare alpha1-beta0 for a conv on input ``x``. ``nonnegative``: whether ``x >= 0``
    is known (None: look)."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _alpha1beta0_prepared(xp, weight, stride, conv_pad, rep, nonnegative)


def _zb_prepared(xp, weight, stride, conv_pad, rep, low=ZB_LOW, high=ZB_HIGH, z=None):
    """z^B on the (already padded) input ``xp``; ``z``: the conv output without bias, if
    known. The bounds apply to every position of the padded input (with zero padding the
    padded positions take their share of the relevance, which is then dropped)."""
    if z is None:
        z = F.conv3d(xp, weight, stride=stride, padding=conv_pad)
    # the conv of a constant 1 over the padded grid is the sum of each output's weights
    view = (1, -1, 1, 1, 1)
    den = z
    terms = [(xp, weight)]
    if low != 0:
        w_pos = weight.clamp(min=0)
        den = den - low * w_pos.sum(dim=(1, 2, 3, 4)).view(view)
        terms.append((-float(low), w_pos))
    if high != 0:
        w_neg = weight.clamp(max=0)
        den = den - high * w_neg.sum(dim=(1, 2, 3, 4)).view(view)
        terms.append((-float(high), w_neg))
    return _ConvRule(terms, den, xp.shape[2:], stride, conv_pad, rep)


def _zb_rule(x, weight, stride=1, padding=0, padding_mode="zeros", low=ZB_LOW,
             high=ZB_HIGH) -> _ConvRule:
    """Prepare z^B (inputs in ``[low, high]``) for a conv on input ``x``."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _zb_prepared(xp, weight, stride, conv_pad, rep, low, high)


class _EpsilonRule:
    """Epsilon rule of a linear map ``x (B, in) -> x w^T``, bias ignored."""

    def __init__(self, x, weight, eps=EPSILON, z=None):
        self.x, self.weight = x, weight
        self.inv = _stabilized_reciprocal(x @ weight.t() if z is None else z, eps)

    def __call__(self, relevance):
        return _bmul(_bmul(relevance, self.inv) @ self.weight, self.x)


class _AvgPoolRule:
    """Average pooling (no padding): ``R_i = x_i / sum_window x * R_j``."""

    def __init__(self, x, kernel_size, stride):
        self.x = x
        self.kernel, self.stride = _triple(kernel_size), _triple(stride)
        c = x.shape[1]
        self.fast = self.kernel == self.stride
        if self.fast:                      # non-overlapping windows: reshape and sum
            out = [n // k for n, k in zip(x.shape[2:], self.kernel)]
            crop = x[:, :, :out[0] * self.kernel[0], :out[1] * self.kernel[1],
                     :out[2] * self.kernel[2]]
            kd, kh, kw = self.kernel
            sums = crop.reshape(x.shape[0], c, out[0], kd, out[1], kh, out[2], kw) \
                       .sum(dim=(3, 5, 7))
        else:
            self.ones = x.new_ones((c, 1) + self.kernel)
            sums = F.conv3d(x, self.ones, stride=self.stride, groups=c)
        self.inv = _safe_reciprocal(sums)

    def __call__(self, relevance):
        s = _bmul(relevance, self.inv)
        n, c = s.shape[:2]
        if self.fast:
            (kd, kh, kw), (d, h, w) = self.kernel, s.shape[2:]
            up = s.reshape(n, c, d, 1, h, 1, w, 1).expand(n, c, d, kd, h, kh, w, kw) \
                  .reshape(n, c, d * kd, h * kh, w * kw)
            extra = [full - got for full, got in zip(self.x.shape[2:], up.shape[2:])]
            if any(extra):
                up = F.pad(up, (0, extra[2], 0, extra[1], 0, extra[0]))
        else:
            op = _output_padding(self.x.shape[2:], s.shape[2:], self.kernel, self.stride,
                                 (0, 0, 0))
            up = F.conv_transpose3d(s, self.ones, stride=self.stride, groups=c,
                                    output_padding=op)
        return _bmul(up, self.x)


class _MaxPoolRule:
    """Max pooling: all of ``R_j`` to the winner index ``max_pool3d`` returned."""

    def __init__(self, x_shape, indices):
        self.x_shape = tuple(x_shape)
        self.indices = indices

    def __call__(self, relevance):
        b, c = self.indices.shape[:2]
        k = relevance.shape[0] // b
        idx = self.indices.reshape(1, b, c, -1).expand(k, b, c, -1).reshape(k * b, c, -1)
        out = relevance.new_zeros((k * b, c, math.prod(self.x_shape[2:])))
        out.scatter_add_(2, idx, relevance.reshape(k * b, c, -1))
        return out.reshape((k * b,) + self.x_shape[1:])


# ======================================================================================
# public single-layer rules
# ======================================================================================
def epsilon_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                   eps: float = EPSILON) -> torch.Tensor:
    """Epsilon rule of a linear map: x (B, in), weight (out, in), relevance (B, out)."""
    return _EpsilonRule(x, weight, eps)(relevance)


def alpha1beta0_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                     stride=1, padding=0, padding_mode: str = "zeros") -> torch.Tensor:
    """alpha=1, beta=0 rule of a conv (bias ignored): relevance in proportion to the
    positive products ``x_i w_ij`` (input and weight of the same sign)."""
    return _alpha1beta0_rule(x, weight, stride, padding, padding_mode)(relevance)


def zb_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, stride=1,
            padding=0, padding_mode: str = "zeros", low: float = ZB_LOW,
            high: float = ZB_HIGH) -> torch.Tensor:
    """z^B rule of a conv whose inputs lie in ``[low, high]`` (bias ignored)."""
    return _zb_rule(x, weight, stride, padding, padding_mode, low, high)(relevance)


def avgpool(x: torch.Tensor, relevance: torch.Tensor, kernel_size, stride) -> torch.Tensor:
    """Average pooling (no padding): relevance in proportion to the window's inputs."""
    return _AvgPoolRule(x, kernel_size, stride)(relevance)


def maxpool(x: torch.Tensor, relevance: torch.Tensor, kernel_size, stride,
            padding=0) -> torch.Tensor:
    """Max pooling: each output's relevance to the input ``max_pool3d`` selects."""
    _, idx = F.max_pool3d(x, kernel_size, stride, padding, return_indices=True)
    return _MaxPoolRule(x.shape, idx)(relevance)


def product(s: torch.Tensor, g: torch.Tensor, relevance: torch.Tensor,
            rule: str) -> tuple:
    """Relevance of an element-wise product ``s * g`` split into ``(R_s, R_g)``.

    ``"proposed"``: in proportion to ``|s|`` and ``|g|`` (both 0 where both are 0);
    ``"lrp-all"``: all to the signal ``s``, none to the gate ``g``.
    """
    _check_rule(rule)
    if rule == "lrp-all":
        return relevance.clone(), torch.zeros_like(relevance)
    s_abs, g_abs = s.abs(), g.abs()
    inv = _safe_reciprocal(s_abs + g_abs)
    return s_abs * inv * relevance, g_abs * inv * relevance


def _check_rule(rule):
    if rule not in PRODUCT_RULES:
        raise ValueError(f"rule must be one of {PRODUCT_RULES}, got {rule!r}")


# ======================================================================================
# canonization
# ======================================================================================
def _bn_terms(bn: nn.BatchNorm3d):
    """Per channel (float64): scale a = gamma / sigma, shift k = beta - a mu (so that
    bn(x) = a x + k), and the clamp bounds of a following ReLU (lo, hi)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("canonization needs BatchNorm running statistics")
    dt = torch.float64
    mu = bn.running_mean.detach().to(dt)
    var = bn.running_var.detach().to(dt)
    c = mu.numel()
    gamma = bn.weight.detach().to(dt) if bn.weight is not None else torch.ones(
        c, dtype=dt, device=mu.device)
    beta = bn.bias.detach().to(dt) if bn.bias is not None else torch.zeros(
        c, dtype=dt, device=mu.device)
    sigma = torch.sqrt(var + bn.eps)
    a = gamma / sigma
    k = beta - a * mu
    return a, k, gamma, beta, mu, sigma


def _relu_chain(bn: nn.BatchNorm3d):
    """BN -> ReLU as ``a * clamp(x) + shift``: returns (a, shift, lo, hi) (float64)."""
    a, k, gamma, beta, mu, sigma = _bn_terms(bn)
    pos, neg, zero = gamma > 0, gamma < 0, gamma == 0
    safe_gamma = torch.where(zero, torch.ones_like(gamma), gamma)
    t = mu - beta * sigma / safe_gamma
    inf = torch.full_like(t, math.inf)
    lo = torch.where(pos, t, -inf)
    hi = torch.where(neg, t, inf)
    shift = torch.where(zero, beta.clamp(min=0), k)   # gamma = 0: constant relu(beta)
    a = torch.where(zero, torch.zeros_like(a), a)
    return a, shift, lo, hi


class Clamp(nn.Module):
    """Sign-aware clamp of a canonized BN -> ReLU chain: ``max(x, t)`` on channels with
    gamma > 0, ``min(x, t)`` with gamma < 0, identity with gamma == 0."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        self.register_buffer("lo", lo.reshape(1, -1, 1, 1, 1).clone())
        self.register_buffer("hi", hi.reshape(1, -1, 1, 1, 1).clone())

    def forward(self, x):
        return torch.clamp(x, min=self.lo, max=self.hi)


class _Conv(nn.Module):
    """A conv with fixed (buffer) weight and optional bias."""

    def __init__(self, weight, bias, conv: nn.Conv3d):
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", None if bias is None else bias.clone())
        self.stride = _triple(conv.stride)
        self.padding = _triple(conv.padding)
        self.padding_mode = conv.padding_mode
        if self.padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"unsupported padding_mode {self.padding_mode!r}")

    def padded(self, x):
        """(input as the conv sees it, padding left to the conv, replicate padding)."""
        if self.padding_mode == "replicate" and any(self.padding):
            return F.pad(x, _pad6(self.padding), mode="replicate"), (0, 0, 0), self.padding
        return x, self.padding, None

    def forward(self, x, with_bias=True):
        xp, pad, _ = self.padded(x)
        return F.conv3d(xp, self.weight, self.bias if with_bias else None, self.stride, pad)

    def with_alpha1beta0(self, x, nonnegative=False):
        """Output (with bias) and the alpha1-beta0 rule on input ``x``. On a non-negative
        input the output and the rule's denominator come from one conv."""
        xp, pad, rep = self.padded(x)
        if nonnegative:
            o = self.weight.shape[0]
            both = F.conv3d(xp, torch.cat([self.weight, self.weight.clamp(min=0)]),
                            stride=self.stride, padding=pad)
            y, den = both[:, :o], both[:, o:]
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1, 1)
            return y, _alpha1beta0_prepared(xp, self.weight, self.stride, pad, rep,
                                            nonnegative=True, den=den)
        y = F.conv3d(xp, self.weight, self.bias, self.stride, pad)
        return y, _alpha1beta0_prepared(xp, self.weight, self.stride, pad, rep,
                                        nonnegative=False)

    def with_zb(self, x, low=ZB_LOW, high=ZB_HIGH):
        """Output (with bias) and the z^B rule on input ``x`` (one conv for both)."""
        xp, pad, rep = self.padded(x)
        z = F.conv3d(xp, self.weight, None, self.stride, pad)
        rule = _zb_prepared(xp, self.weight, self.stride, pad, rep, low, high, z=z)
        y = z if self.bias is None else z + self.bias.view(1, -1, 1, 1, 1)
        return y, rule


def _cast(t, like):
    return t.to(dtype=like.dtype, device=like.device)


class _CanonDenseLayer(nn.Module):
    """clamp -> conv1 (bn1 scale in, bn2 folded) -> ReLU -> conv2; concat to the input."""

    def __init__(self, layer):
        super().__init__()
        a1, k1, lo, hi = _relu_chain(layer.bn1)
        w1 = layer.conv1.weight.detach().to(torch.float64)
        a2, k2 = _bn_terms(layer.bn2)[:2]
        w1_in = w1 * a1.view(1, -1, 1, 1, 1)
        bias1 = w1.flatten(1) @ k1                          # constant of the clamp chain
        if layer.conv1.bias is not None:
            bias1 = bias1 + layer.conv1.bias.detach().to(torch.float64)
        weight = w1_in * a2.view(-1, 1, 1, 1, 1)
        bias = a2 * bias1 + k2
        like = layer.conv1.weight
        self.in_channels = w1.shape[1]
        self.clamp = Clamp(_cast(lo, like), _cast(hi, like))
        self.conv1 = _Conv(_cast(weight, like), _cast(bias, like), layer.conv1)
        w2 = layer.conv2.weight.detach().clone()
        bias2 = None if layer.conv2.bias is None else layer.conv2.bias.detach().clone()
        # bn2 with gamma = 0 makes a conv1 channel the constant relu(bias): for conv2 a
        # bias, not an input (with replicate padding it is constant at the borders too),
        # so no relevance is sent to it and lost there.
        constant = a2 == 0
        if constant.any() and (layer.conv2.padding_mode == "replicate"
                               or not any(_triple(layer.conv2.padding))):
            add = w2.to(torch.float64).sum(dim=(2, 3, 4)) @ (torch.relu(bias) * constant)
            bias2 = _cast(add if bias2 is None else bias2.to(torch.float64) + add, like)
            w2[:, constant] = 0.0
        self.conv2 = _Conv(w2, bias2, layer.conv2)

    def forward(self, x, store=None):
        c1 = self.clamp(x)
        if store is None:
            new = self.conv2(torch.relu(self.conv1(c1)))
        else:
            y1, store["conv1"] = self.conv1.with_alpha1beta0(c1, nonnegative=False)
            new, store["conv2"] = self.conv2.with_alpha1beta0(torch.relu(y1),
                                                              nonnegative=True)
        return torch.cat([x, new], dim=1)

    def relevance(self, store, r):
        c = self.in_channels
        r_new = store["conv1"](store["conv2"](r[:, c:]))
        return r[:, :c] + r_new


class _CanonTransition(nn.Module):
    """clamp -> conv 1x1x1 (bn scale in) -> AvgPool3d."""

    def __init__(self, tr):
        super().__init__()
        a, shift, lo, hi = _relu_chain(tr.bn)
        w = tr.conv.weight.detach().to(torch.float64)
        bias = w.flatten(1) @ shift if w.shape[2:] == (1, 1, 1) else None
        if bias is None:
            raise ValueError("transition conv must be 1x1x1 for canonization")
        if tr.conv.bias is not None:
            bias = bias + tr.conv.bias.detach().to(torch.float64)
        like = tr.conv.weight
        self.clamp = Clamp(_cast(lo, like), _cast(hi, like))
        self.conv = _Conv(_cast(w * a.view(1, -1, 1, 1, 1), like), _cast(bias, like), tr.conv)
        if tr.pool.padding not in (0, (0, 0, 0)) or tr.pool.ceil_mode:
            raise ValueError("transition pooling with padding/ceil_mode is not supported")
        self.pool_kernel = _triple(tr.pool.kernel_size)
        self.pool_stride = _triple(tr.pool.stride)

    def forward(self, x, store=None):
        c = self.clamp(x)
        if store is None:
            y = self.conv(c)
        else:
            y, store["conv"] = self.conv.with_alpha1beta0(c, nonnegative=False)
            store["pool"] = _AvgPoolRule(y, self.pool_kernel, self.pool_stride)
        return F.avg_pool3d(y, self.pool_kernel, self.pool_stride)

    def relevance(self, store, r):
        return store["conv"](store["pool"](r))


class CanonicalPath(nn.Module):
    """One canonized path: stem (BN folded), dense blocks, transitions, clamp + head FC."""

    def __init__(self, path):
        super().__init__()
        stem = path.stem
        a, k = _bn_terms(stem.bn)[:2]
        w = stem.conv.weight.detach().to(torch.float64)
        bias = k if stem.conv.bias is None else a * stem.conv.bias.detach().double() + k
        like = stem.conv.weight
        self.stem_conv = _Conv(_cast(w * a.view(-1, 1, 1, 1, 1), like), _cast(bias, like),
                               stem.conv)
        self.pool_args = (_triple(stem.pool.kernel_size), _triple(stem.pool.stride),
                          _triple(stem.pool.padding))
        if stem.pool.ceil_mode or _triple(stem.pool.dilation) != (1, 1, 1):
            raise ValueError("stem pooling with ceil_mode/dilation is not supported")
        self.blocks = nn.ModuleList(
            nn.ModuleList(_CanonDenseLayer(layer) for layer in block.layers)
            for block in path.blocks)
        self.transitions = nn.ModuleList(_CanonTransition(t) for t in path.transitions)
        if (a == 0).any():
            self._fold_constant_stem_channels(a == 0, torch.relu(bias))
        a, shift, lo, hi = _relu_chain(path.head_bn)
        fc_w = path.head_fc.weight.detach().to(torch.float64)
        c = a.numel()
        w3 = fc_w.reshape(fc_w.shape[0], c, -1)
        like = path.head_fc.weight
        self.head_clamp = Clamp(_cast(lo, like), _cast(hi, like))
        self.register_buffer("head_weight", _cast((w3 * a.view(1, c, 1)).reshape_as(fc_w),
                                                  like))
        head_bias = w3.sum(dim=2) @ shift
        if path.head_fc.bias is not None:
            head_bias = head_bias + path.head_fc.bias.detach().to(torch.float64)
        self.register_buffer("head_bias", _cast(head_bias, like))
        self.feature_shape = tuple(path.feature_shape)

    def _fold_constant_stem_channels(self, constant, value):
        """A stem BN with gamma = 0 makes that stem channel the constant ``relu(bias)``
        (max pooling keeps it): for every conv that reads it, the first block's dense
        layers and the first transition (1x1x1 convs after their clamps), it is a bias,
        not an input, so no relevance is sent to it (the stem rule could not pass it on)."""
        idx = torch.nonzero(constant).flatten()
        consumers = [(layer.clamp, layer.conv1) for layer in self.blocks[0]]
        consumers += [(t.clamp, t.conv) for t in self.transitions[:1]]
        for clamp, conv in consumers:
            if tuple(conv.weight.shape[2:]) != (1, 1, 1):
                raise ValueError("a constant stem channel needs 1x1x1 convs to read it")
            w = conv.weight
            v = value[idx].to(w)
            v = torch.minimum(torch.maximum(v, clamp.lo.flatten()[idx]), clamp.hi.flatten()[idx])
            add = (w[:, idx, 0, 0, 0] * v).sum(dim=1)
            conv.bias = add if conv.bias is None else conv.bias + add
            w[:, idx] = 0.0

    def forward(self, x, store=None):
        """x (B, 1, D, H, W) -> m (B, hidden); with ``store`` (a dict) the rules of the
        walk are prepared from this pass's intermediates and kept in it."""
        if store is not None:
            y, store["stem_conv"] = self.stem_conv.with_zb(x)
            y = torch.relu(y)
            h, idx = F.max_pool3d(y, *self.pool_args, return_indices=True)
            store["stem_pool"] = _MaxPoolRule(y.shape, idx)
            store["blocks"] = [[{} for _ in block] for block in self.blocks]
            store["transitions"] = [{} for _ in self.transitions]
        else:
            h = F.max_pool3d(torch.relu(self.stem_conv(x)), *self.pool_args)
        for i, block in enumerate(self.blocks):
            for j, layer in enumerate(block):
                h = layer(h, None if store is None else store["blocks"][i][j])
            if i < len(self.transitions):
                h = self.transitions[i](h, None if store is None else store["transitions"][i])
        c = self.head_clamp(h).flatten(1)
        zf = c @ self.head_weight.t()
        if store is not None:
            store["head"] = _EpsilonRule(c, self.head_weight, z=zf)
        return zf + self.head_bias

    def relevance(self, store, r_m):
        """Walk relevance from m (N, hidden), N = k * B, down to the voxels (N, 1, D, H, W)."""
        r = store["head"](r_m).reshape((r_m.shape[0],) + self.feature_shape)
        for i in reversed(range(len(self.blocks))):
            for j in reversed(range(len(self.blocks[i]))):
                r = self.blocks[i][j].relevance(store["blocks"][i][j], r)
            if i > 0:
                r = self.transitions[i - 1].relevance(store["transitions"][i - 1], r)
        return store["stem_conv"](store["stem_pool"](r))


class CanonicalGamerMRIL(nn.Module):
    """The canonized network (see the module docstring); same call signature and output
    as :class:`gamer_mril.network.GamerMRIL` in eval mode."""

    def __init__(self, model: GamerMRIL):
        super().__init__()
        self.input_shape = tuple(model.input_shape)
        self.contrasts = tuple(model.contrasts)
        self.config = copy.deepcopy(getattr(model, "config", {}))
        self.paths = nn.ModuleList(CanonicalPath(p) for p in model.paths)
        self.att_U = copy.deepcopy(model.att_U)
        self.att_V = copy.deepcopy(model.att_V)
        self.att_w = copy.deepcopy(model.att_w)
        self.classifier = copy.deepcopy(model.classifier)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def encode(self, x, stores=None):
        """(B, L, D, H, W) -> m (B, L, hidden); ``stores``: {l: dict} for walked paths."""
        stores = stores or {}
        return torch.stack([path(x[:, l:l + 1], stores.get(l))
                            for l, path in enumerate(self.paths)], dim=1)

    # The attention and the classifier are not changed by canonization: the network's own
    # code runs them (same attribute names).
    attend = GamerMRIL.attend
    classify = GamerMRIL.classify
    head = GamerMRIL.head
    _check_inputs = GamerMRIL._check_inputs

    def forward(self, x, age, return_details: bool = False, stores=None):
        self._check_inputs(x, age)
        return self.head(self.encode(x, stores), age, return_details)


def canonize(model: nn.Module) -> CanonicalGamerMRIL:
    """A canonized copy of ``model`` (eval-mode statistics, same dtype and device).

    ``canon(x, age)`` equals ``model.eval()(x, age)`` up to rounding; ``model`` itself is
    not modified (not even its train/eval mode). A canonized model is returned as is.
    """
    if isinstance(model, CanonicalGamerMRIL):
        return model
    if not isinstance(model, GamerMRIL):
        raise TypeError(f"expected a gamer_mril.network.GamerMRIL, got {type(model).__name__}")
    with torch.no_grad():
        return CanonicalGamerMRIL(model)


# ======================================================================================
# relevance of the whole network
# ======================================================================================
@dataclass
class Explanation:
    """Relevance of every voxel of every contrast (B, L, D, H, W), of age (B,), and the
    value the relevance started from (B,): f(x) or a_l."""
    voxels: torch.Tensor
    age: torch.Tensor
    start: torch.Tensor


def _top_relevance(canon: CanonicalGamerMRIL, det: dict, start, rule):
    """Relevance at m (B, L, hidden), at age (B,) and the start value (B,)."""
    m, s, g, a, n, z = (det[k] for k in ("m", "s", "g", "a", "n", "z"))
    n_paths = a.shape[1]
    if start == "logit":
        r0 = det["logit"]
        c = canon.classifier.weight[0]
        r_z = z * c * (r0 * _stabilized_reciprocal(z @ c, EPSILON)).unsqueeze(1)
        r_age = r_z[:, -1]
        contrib = a.unsqueeze(-1) * m                              # (B, L, hidden)
        r_prod = contrib * (r_z[:, :-1] * _stabilized_reciprocal(n, EPSILON)).unsqueeze(1)
        r_m, r_gate = product(m, a.unsqueeze(-1).expand_as(m), r_prod, rule)
        r_e = r_gate.sum(dim=-1)                                   # softmax passes
    else:
        r0 = a[:, start]
        r_age = torch.zeros_like(r0)
        r_m = torch.zeros_like(m)
        r_e = torch.zeros_like(a)
        r_e[:, start] = r0
    paths = range(n_paths) if start == "logit" else [start]
    if start != "logit" or rule == "proposed":
        u = s * g
        w = canon.att_w.weight[0]
        e0 = u @ w
        r_u = u * w * (r_e * _stabilized_reciprocal(e0, EPSILON)).unsqueeze(-1)
        r_s, r_g = product(s, g, r_u, rule)
        U, V = canon.att_U.weight, canon.att_V.weight
        r_m = r_m + m * ((r_s * _stabilized_reciprocal(m @ U.t(), EPSILON)) @ U)
        r_m = r_m + m * ((r_g * _stabilized_reciprocal(m @ V.t(), EPSILON)) @ V)
    return r_m, r_age, r0, list(paths)


def _parse_start(start, n_paths):
    if isinstance(start, str):
        if start != "logit":
            raise ValueError(f"start must be 'logit' or a contrast index, got {start!r}")
        return start
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise ValueError(f"start must be 'logit' or a contrast index, got {start!r}")
    if not 0 <= int(start) < n_paths:
        raise ValueError(f"contrast index {start} out of range 0..{n_paths - 1}")
    return int(start)


def _prepare_inputs(canon, x, age):
    ref = canon.paths[0].head_weight
    x = x.detach().to(device=ref.device, dtype=ref.dtype)
    age = age.detach().to(device=ref.device)
    return x, age


def _lrp(canon: CanonicalGamerMRIL, x, age, requests) -> dict:
    """Relevance for every (start, rule) in ``requests`` from one forward pass; the walks
    through a path are batched. Returns {(start, rule): Explanation}."""
    n_paths = len(canon.paths)
    requests = [(_parse_start(s, n_paths), r) for s, r in requests]
    for _, r in requests:
        _check_rule(r)
    walked = sorted({l for s, _ in requests
                     for l in (range(n_paths) if s == "logit" else [s])})
    with torch.no_grad():
        stores = {l: {} for l in walked}
        det = canon(x, age, return_details=True, stores=stores)
        tops = {req: _top_relevance(canon, det, *req) for req in requests}
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
            rule: str = "proposed") -> Explanation:
    """LRP relevance of the voxels and of age.

    ``start``: ``"logit"`` (relevance f(x) at the logit) or an int ``l`` (relevance a_l at
    the score e_l; only path ``l`` is walked, other channels and age get exactly 0).
    ``rule``: ``"proposed"`` or ``"lrp-all"`` for the element-wise products.
    ``model``: a :class:`GamerMRIL` (canonized here; not modified) or a canonized model.
    """
    canon = canonize(model)
    x, age = _prepare_inputs(canon, x, age)
    return _lrp(canon, x, age, [(start, rule)])[(_parse_start(start, len(canon.paths)), rule)]


# ======================================================================================
# gradient baselines
# ======================================================================================
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


def _parse_target(target, n_paths):
    return _parse_start(target, n_paths)


def saliency(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
             target="logit") -> torch.Tensor:
    """``|dy/dx|`` (B, L, D, H, W), y = f(x) (``"logit"``) or a_l (an int ``l``)."""
    net = _eval_network(model)
    target = _parse_target(target, len(net.paths))
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
    target = _parse_target(target, len(net.paths))
    return _ig(net, x.detach(), age.detach(), [target], steps, chunk)[0]


# ======================================================================================
# the twelve scenarios of Table I
# ======================================================================================
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


def scenario_maps(model: nn.Module, x: torch.Tensor, age: torch.Tensor,
                  scenarios: Iterable[int] = range(1, 13), ig_steps: int = 32,
                  progress: Callable[[str], None] | None = None,
                  record: dict | None = None) -> dict:
    """Maps of the requested scenarios: {number: tensor}, individual (B, L, D, H, W),
    combined (B, D, H, W) = sum_l R_l * x_l. All LRP scenarios share one forward pass and
    batched walks; saliency scenarios share one forward pass, IG ones each path point's.
    ``progress``, if given, is called with a short message after each stage; a progress
    bar over the scenarios goes to the ``gamer_mril`` logger (:mod:`gamer_mril.progress`).
    ``record``, if given, receives {number: :func:`conservation` of the walk} for the LRP
    scenarios (a combined map shares its individual map's walk)."""
    numbers = sorted({int(n) for n in scenarios})
    unknown = [n for n in numbers if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario numbers {unknown}; known: 1..12")
    bar = progress_bar(len(numbers), "relevance scenarios", unit="map")

    def note(message, done):
        bar.update(done)
        if progress is not None:
            progress(message)

    chosen = [SCENARIOS[n] for n in numbers]
    out = {}
    lrp_rows = [sc for sc in chosen if sc.method == "lrp"]
    if lrp_rows:
        canon = canonize(model)
        xc, agec = _prepare_inputs(canon, x, age)
        n_paths = len(canon.paths)
        wanted = sorted({(sc.start, sc.rule) for sc in lrp_rows})
        requests = []
        for start, rule in wanted:
            requests += [("logit", rule)] if start == "f" else [(l, rule)
                                                               for l in range(n_paths)]
        maps = _lrp(canon, xc, agec, requests)
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
        note(f"LRP scenarios {[sc.number for sc in lrp_rows]} done", len(lrp_rows))
    grad_rows = [sc for sc in chosen if sc.method in ("saliency", "ig")]
    if grad_rows:
        net = _eval_network(model)
        for method in ("saliency", "ig"):
            rows = [sc for sc in grad_rows if sc.method == method]
            if not rows:
                continue
            targets = ["aw" if sc.start == "aw" else "logit" for sc in rows]
            if method == "saliency":
                results = [gx.abs() for gx in
                           _input_gradients(net, x.detach(), age.detach(), targets)]
            else:
                results = _ig(net, x.detach(), age.detach(), targets, ig_steps)
            for sc, res in zip(rows, results):
                out[sc.number] = res
            note(f"{method} scenarios {[sc.number for sc in rows]} done", len(rows))
    bar.close()
    return {n: out[n] for n in numbers}
