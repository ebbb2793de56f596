"""Canonization: the network rewritten without batch normalisations, so that every layer
is a linear map followed by an element-wise non-linearity (docs/method.md#61-canonization;
interface in docs/lrp.md).

:func:`canonize` returns a copy (the model given is not touched). Write a BN in eval
mode as ``bn(x) = a (x - mu) + beta`` per channel, with ``a = gamma / sigma`` and
``sigma = sqrt(running_var + eps)``.

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
original in eval mode (up to rounding). Its forward pass with a store (a dict per walked
path) also prepares the rule of every layer, as the composite
(:class:`gamer_mril.lrp.composite.Composite`) says, from that pass's intermediates; each
module's ``relevance()`` then walks the relevance down through it.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..network import GamerMRIL
from ._ops import _pad_input, _triple
from .composite import PAPER


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

    def forward(self, x, with_bias=True):
        xp, pad, _ = _pad_input(x, self.padding, self.padding_mode)
        return F.conv3d(xp, self.weight, self.bias if with_bias else None, self.stride, pad)


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

    def forward(self, x, store=None, rules=None):
        """With ``store`` (a dict) the rules of ``rules.conv`` are prepared and kept."""
        c1 = self.clamp(x)
        if store is None:
            new = self.conv2(torch.relu(self.conv1(c1)))
        else:
            y1, store["conv1"] = rules.conv.prepare(self.conv1, c1, nonnegative=False)
            new, store["conv2"] = rules.conv.prepare(self.conv2, torch.relu(y1),
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

    def forward(self, x, store=None, rules=None):
        """With ``store`` the rules of ``rules.conv`` and ``rules.avg_pool`` are kept."""
        c = self.clamp(x)
        if store is None:
            return F.avg_pool3d(self.conv(c), self.pool_kernel, self.pool_stride)
        y, store["conv"] = rules.conv.prepare(self.conv, c, nonnegative=False)
        out, store["pool"] = rules.avg_pool.prepare(y, self.pool_kernel, self.pool_stride)
        return out

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

    def forward(self, x, store=None, rules=None):
        """x (B, 1, D, H, W) -> m (B, hidden); with ``store`` (a dict) the rules of the
        walk, each layer's as the composite ``rules`` says (default: the paper's), are
        prepared from this pass's intermediates and kept in it."""
        if store is not None:
            rules = PAPER if rules is None else rules
            y, store["stem_conv"] = rules.first_conv.prepare(self.stem_conv, x)
            h, store["stem_pool"] = rules.max_pool.prepare(torch.relu(y), *self.pool_args)
            store["blocks"] = [[{} for _ in block] for block in self.blocks]
            store["transitions"] = [{} for _ in self.transitions]
        else:
            h = F.max_pool3d(torch.relu(self.stem_conv(x)), *self.pool_args)
        for i, block in enumerate(self.blocks):
            for j, layer in enumerate(block):
                h = layer(h, None if store is None else store["blocks"][i][j], rules)
            if i < len(self.transitions):
                h = self.transitions[i](h, None if store is None else store["transitions"][i],
                                        rules)
        c = self.head_clamp(h).flatten(1)
        if store is None:
            return c @ self.head_weight.t() + self.head_bias
        m, store["head"] = rules.linear.prepare_linear(c, self.head_weight, self.head_bias)
        return m

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
    """The canonized network (see :mod:`gamer_mril.lrp.canonize`); same call signature and
    output as :class:`gamer_mril.network.GamerMRIL` in eval mode (plus the stores of a
    walk and the composite their rules come from)."""

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

    def encode(self, x, stores=None, rules=None):
        """(B, L, D, H, W) -> m (B, L, hidden); ``stores``: {l: dict} for walked paths,
        their rules from the composite ``rules`` (default: the paper's)."""
        stores = stores or {}
        return torch.stack([path(x[:, l:l + 1], stores.get(l), rules)
                            for l, path in enumerate(self.paths)], dim=1)

    # The attention and the classifier are not changed by canonization: the network's own
    # code runs them (same attribute names).
    attend = GamerMRIL.attend
    classify = GamerMRIL.classify
    head = GamerMRIL.head
    _check_inputs = GamerMRIL._check_inputs

    def forward(self, x, age, return_details: bool = False, stores=None, rules=None):
        self._check_inputs(x, age)
        return self.head(self.encode(x, stores, rules), age, return_details)


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
