"""The relevance rules, one small class each (docs/method.md#62-rules-per-layer and
docs/method.md#63-element-wise-products; conventions in docs/lrp.md).

A rule object only says how one layer splits relevance; which layer gets which rule is
the business of :mod:`gamer_mril.lrp.composite`. Conv rules (:class:`ZB`,
:class:`Alpha1Beta0`, :class:`Epsilon`, and beyond the paper :class:`Gamma` and
:class:`Flat`, docs/method.md#68-beyond-the-paper-scenarios-13-to-20) have
``prepare(conv, x, **hints)``, which runs the
layer's forward on ``x`` and returns ``(output, backward)``: ``backward`` maps the
relevance of the output (any number ``k`` of walks stacked as ``k * B`` samples) to that
of ``x``. The speed tricks live there: alpha1-beta0 on an input known to be non-negative
(hint ``nonnegative=True``) gets the output and its denominator from one conv, z^B and
epsilon share the conv with the forward. :class:`Epsilon` also serves the fully connected
layers (``prepare_linear``, ``reciprocal``); the pooling rules have
``prepare(x, kernel, stride, ...)``; the product rules (:class:`ProposedProduct`,
:class:`SignalTakesAll`) have ``split(s, g, relevance) -> (R_s, R_g)``.

Biases are ignored by every rule; a zero denominator gives zero relevance. The functions
at the end (:func:`epsilon_linear`, :func:`alpha1beta0_conv`, :func:`zb_conv`,
:func:`gamma_conv`, :func:`gamma_linear`, :func:`flat_conv`, :func:`avgpool`,
:func:`maxpool`, :func:`product`) apply one rule to plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..settings import GAMMA  # the gamma rule's default, relevance.gamma's
from ._ops import (_AvgPoolRule, _bmul, _ConvRule, _MaxPoolRule, _pad_input, _safe_reciprocal,
                   _stabilized_reciprocal, _stabilizer_sign, _triple)

#: Stabiliser of the epsilon rule: ``z + EPSILON * sign(z)``, ``sign(0) = +1``.
EPSILON = 1e-8

#: Bounds of the z^B rule on the first conv of every path (normalised images in [0, 1]).
ZB_LOW, ZB_HIGH = 0.0, 1.0


# ======================================================================================
# prepared rules: built on one forward pass, applied to any number of walks
# ======================================================================================
def _conv_geometry(x, weight, stride, padding, padding_mode):
    """(padded input, stride, padding left to the conv, replicate padding or None)."""
    stride, padding = _triple(stride), _triple(padding)
    if padding_mode not in ("zeros", "replicate"):
        raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
    if x.ndim != 5 or weight.ndim != 5 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"expected x (B, C, D, H, W) and weight (O, C, k, k, k), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    xp, conv_pad, rep = _pad_input(x, padding, padding_mode)
    return xp, stride, conv_pad, rep


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


def _gamma_prepared(xp, weight, stride, conv_pad, rep, gamma, nonnegative=False):
    """(bias-free output z, the gamma rule) on the (already padded) input ``xp``.

    A neuron with ``z_j > 0`` splits its relevance in proportion to
    ``c_ij = z_ij + gamma (z_ij)^+`` (``z_ij = x_i w_ij``), one with ``z_j < 0`` to
    ``z_ij + gamma (z_ij)^-``: the products of the output's sign are favoured, so the
    denominator ``sum_i c_ij`` has the sign of ``z_j`` and never crosses zero; ``z_j = 0``
    gets no share. For ``x >= 0`` and ``z_j > 0``, ``c_ij = x_i (w_ij + gamma w_ij^+)``.
    In weights: ``up = w + gamma w^+`` and ``down = w + gamma w^-``; ``x^+`` meets ``up``
    for positive neurons and ``down`` for negative ones, ``x^-`` the other way round."""
    o = weight.shape[0]
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    up, down = weight + gamma * w_pos, weight + gamma * w_neg
    if nonnegative:
        both = F.conv3d(xp, torch.cat([weight, w_pos]), stride=stride, padding=conv_pad)
        z, pos = both[:, :o], both[:, o:]
        terms = [(xp, torch.cat([up, down]))]
    else:
        x_pos, x_neg = xp.clamp(min=0), xp.clamp(max=0)
        z = F.conv3d(xp, weight, stride=stride, padding=conv_pad)
        pos = F.conv3d(torch.cat([x_pos, x_neg], dim=1), torch.cat([w_pos, w_neg], dim=1),
                       stride=stride, padding=conv_pad)      # sum of the positive products
        terms = [(x_pos, torch.cat([up, down])), (x_neg, torch.cat([down, up]))]
    den = torch.where(z > 0, z + gamma * pos, z + gamma * (z - pos))
    masks = [(z > 0).to(z.dtype), (z < 0).to(z.dtype)]
    return z, _ConvRule(terms, den, xp.shape[2:], stride, conv_pad, rep, out_split=masks)


def _flat_prepared(xp, weight, stride, conv_pad, rep):
    """The flat rule on the (already padded) input ``xp``: inputs and weights taken as 1,
    so each output's relevance is spread evenly over its receptive field (every input
    channel and kernel offset that lies on the conv's input; replicate-padded positions
    count and go back to the voxel they copy, zero-padded ones do not count)."""
    ones = torch.ones_like(weight)
    den = F.conv3d(torch.ones_like(xp[:1]), ones, stride=stride, padding=conv_pad)
    return _ConvRule([(1.0, ones)], den, xp.shape[2:], stride, conv_pad, rep)


class _EpsilonRule:
    """Epsilon rule of a linear map ``x (B, in) -> x w^T``, bias ignored."""

    def __init__(self, x, weight, eps=EPSILON, z=None):
        self.x, self.weight = x, weight
        self.inv = _stabilized_reciprocal(x @ weight.t() if z is None else z, eps)

    def __call__(self, relevance):
        return _bmul(_bmul(relevance, self.inv) @ self.weight, self.x)


def _with_bias(z, bias):
    """A conv's output from its bias-free part ``z``."""
    return z if bias is None else z + bias.view(1, -1, 1, 1, 1)


def _bias_free_conv(conv, x):
    """(padded input, padding left to the conv, replicate padding, conv output without
    bias) of ``conv`` (an object with weight, bias, stride, padding, padding_mode)."""
    xp, pad, rep = _pad_input(x, conv.padding, conv.padding_mode)
    return xp, pad, rep, F.conv3d(xp, conv.weight, None, conv.stride, pad)


# ======================================================================================
# the rules
# ======================================================================================
@dataclass(frozen=True)
class ZB:
    """z^B for inputs in ``[low, high]`` (the first conv of each path: the images)."""
    low: float = ZB_LOW
    high: float = ZB_HIGH

    def prepare(self, conv, x, **hints):
        """Output (with bias) and the z^B rule on input ``x`` (one conv for both)."""
        xp, pad, rep, z = _bias_free_conv(conv, x)
        rule = _zb_prepared(xp, conv.weight, conv.stride, pad, rep, self.low, self.high, z=z)
        return _with_bias(z, conv.bias), rule


@dataclass(frozen=True)
class Alpha1Beta0:
    """alpha=1, beta=0: relevance in proportion to the positive products ``x_i w_ij``."""

    def prepare(self, conv, x, nonnegative=False, **hints):
        """Output (with bias) and the rule on input ``x``. On an input known to be
        non-negative the output and the rule's denominator come from one conv."""
        xp, pad, rep = _pad_input(x, conv.padding, conv.padding_mode)
        if nonnegative:
            o = conv.weight.shape[0]
            both = F.conv3d(xp, torch.cat([conv.weight, conv.weight.clamp(min=0)]),
                            stride=conv.stride, padding=pad)
            y, den = both[:, :o], both[:, o:]
            if conv.bias is not None:
                y = y + conv.bias.view(1, -1, 1, 1, 1)
            return y, _alpha1beta0_prepared(xp, conv.weight, conv.stride, pad, rep,
                                            nonnegative=True, den=den)
        y = F.conv3d(xp, conv.weight, conv.bias, conv.stride, pad)
        return y, _alpha1beta0_prepared(xp, conv.weight, conv.stride, pad, rep,
                                        nonnegative=False)


@dataclass(frozen=True)
class Epsilon:
    """Epsilon: ``R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j``, ``sign(0) = +1``; for
    convs and fully connected layers."""
    eps: float = EPSILON

    def prepare(self, conv, x, **hints):
        """Output (with bias) and the epsilon rule of a conv on input ``x``."""
        xp, pad, rep, z = _bias_free_conv(conv, x)
        den = z + self.eps * _stabilizer_sign(z)
        rule = _ConvRule([(xp, conv.weight)], den, xp.shape[2:], conv.stride, pad, rep)
        return _with_bias(z, conv.bias), rule

    def prepare_linear(self, x, weight, bias):
        """Output ``x w^T + bias`` and the epsilon rule of the linear map on ``x``."""
        z = x @ weight.t()
        return z + bias, _EpsilonRule(x, weight, self.eps, z=z)

    def reciprocal(self, z):
        """``1 / (z + eps sign(z))`` (0 if that is 0), the factor of a linear map's
        relevance written out in the attention level."""
        return _stabilized_reciprocal(z, self.eps)


@dataclass(frozen=True)
class Gamma:
    """Gamma (beyond the paper): relevance in proportion to ``z_ij + gamma (z_ij)^+``
    for a positive output, ``z_ij + gamma (z_ij)^-`` for a negative one (``gamma = 0``:
    LRP-0; large gamma: towards alpha1-beta0). Bias ignored."""
    gamma: float = GAMMA

    def __post_init__(self):
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")

    def prepare(self, conv, x, nonnegative=False, **hints):
        """Output (with bias) and the rule on input ``x``; on an input known to be
        non-negative output and denominator come from one conv."""
        xp, pad, rep = _pad_input(x, conv.padding, conv.padding_mode)
        z, rule = _gamma_prepared(xp, conv.weight, conv.stride, pad, rep, float(self.gamma),
                                  nonnegative=nonnegative)
        return _with_bias(z, conv.bias), rule


@dataclass(frozen=True)
class Flat:
    """Flat (beyond the paper, for the first layer): each output's relevance spread
    evenly over its receptive field, whatever the inputs and weights."""

    def prepare(self, conv, x, **hints):
        """Output (with bias) of the conv and the flat rule of its receptive fields."""
        xp, pad, rep, z = _bias_free_conv(conv, x)
        return _with_bias(z, conv.bias), _flat_prepared(xp, conv.weight, conv.stride, pad, rep)


@dataclass(frozen=True)
class MaxPool:
    """Max pooling: all of an output's relevance to the input ``max_pool3d`` picks."""

    def prepare(self, x, kernel_size, stride, padding=0):
        out, idx = F.max_pool3d(x, kernel_size, stride, padding, return_indices=True)
        return out, _MaxPoolRule(x.shape, idx)


@dataclass(frozen=True)
class AvgPool:
    """Average pooling (no padding): relevance in proportion to the window's inputs."""

    def prepare(self, x, kernel_size, stride):
        return F.avg_pool3d(x, kernel_size, stride), _AvgPoolRule(x, kernel_size, stride)


@dataclass(frozen=True)
class ProposedProduct:
    """The paper's rule for ``s * g``: ``R`` split in proportion to ``|s|`` and ``|g|``
    (both 0 where both are 0)."""
    name = "proposed"
    #: whether the gate can receive relevance (if not, a walk may skip the gate's branch)
    to_gate = True

    def split(self, s, g, relevance):
        s_abs, g_abs = s.abs(), g.abs()
        inv = _safe_reciprocal(s_abs + g_abs)
        return s_abs * inv * relevance, g_abs * inv * relevance


@dataclass(frozen=True)
class SignalTakesAll:
    """LRP-all for ``s * g``: all of ``R`` to the signal ``s``, none to the gate ``g``."""
    name = "lrp-all"
    to_gate = False

    def split(self, s, g, relevance):
        return relevance.clone(), torch.zeros_like(relevance)


#: The product rules by name (docs/method.md#63-element-wise-products).
PRODUCTS = {cls.name: cls for cls in (ProposedProduct, SignalTakesAll)}

#: The names of the two rules for element-wise products.
PRODUCT_RULES = tuple(PRODUCTS)


def product_rule(rule: str):
    """The product rule object named ``rule`` (one of :data:`PRODUCT_RULES`)."""
    if rule not in PRODUCT_RULES:
        raise ValueError(f"rule must be one of {PRODUCT_RULES}, got {rule!r}")
    return PRODUCTS[rule]()


# ======================================================================================
# single-layer rules on plain tensors
# ======================================================================================
def epsilon_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                   eps: float = EPSILON) -> torch.Tensor:
    """Epsilon rule of a linear map: x (B, in), weight (out, in), relevance (B, out)."""
    return _EpsilonRule(x, weight, eps)(relevance)


def alpha1beta0_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                     stride=1, padding=0, padding_mode: str = "zeros") -> torch.Tensor:
    """alpha=1, beta=0 rule of a conv (bias ignored): relevance in proportion to the
    positive products ``x_i w_ij`` (input and weight of the same sign)."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _alpha1beta0_prepared(xp, weight, stride, conv_pad, rep)(relevance)


def zb_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, stride=1,
            padding=0, padding_mode: str = "zeros", low: float = ZB_LOW,
            high: float = ZB_HIGH) -> torch.Tensor:
    """z^B rule of a conv whose inputs lie in ``[low, high]`` (bias ignored)."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _zb_prepared(xp, weight, stride, conv_pad, rep, low, high)(relevance)


def gamma_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
               gamma: float = GAMMA, stride=1, padding=0,
               padding_mode: str = "zeros") -> torch.Tensor:
    """Gamma rule of a conv (bias ignored), see :class:`Gamma`."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _gamma_prepared(xp, weight, stride, conv_pad, rep, float(gamma),
                           nonnegative=bool((xp >= 0).all()))[1](relevance)


def gamma_linear(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor,
                 gamma: float = GAMMA) -> torch.Tensor:
    """Gamma rule of a linear map (bias ignored): x (B, in), weight (out, in), R (B, out)."""
    view = (1, 1, 1)
    r = gamma_conv(x.reshape(x.shape + view), weight.reshape(weight.shape + view),
                   relevance.reshape(relevance.shape + view), gamma)
    return r.reshape(x.shape)


def flat_conv(x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, stride=1,
              padding=0, padding_mode: str = "zeros") -> torch.Tensor:
    """Flat rule of a conv: relevance spread evenly over each receptive field."""
    xp, stride, conv_pad, rep = _conv_geometry(x, weight, stride, padding, padding_mode)
    return _flat_prepared(xp, weight, stride, conv_pad, rep)(relevance)


def avgpool(x: torch.Tensor, relevance: torch.Tensor, kernel_size, stride) -> torch.Tensor:
    """Average pooling (no padding): relevance in proportion to the window's inputs."""
    return _AvgPoolRule(x, kernel_size, stride)(relevance)


def maxpool(x: torch.Tensor, relevance: torch.Tensor, kernel_size, stride,
            padding=0) -> torch.Tensor:
    """Max pooling: each output's relevance to the input ``max_pool3d`` selects."""
    return MaxPool().prepare(x, kernel_size, stride, padding)[1](relevance)


def product(s: torch.Tensor, g: torch.Tensor, relevance: torch.Tensor,
            rule: str) -> tuple:
    """Relevance of an element-wise product ``s * g`` split into ``(R_s, R_g)``.

    ``"proposed"`` (:class:`ProposedProduct`): in proportion to ``|s|`` and ``|g|`` (both
    0 where both are 0); ``"lrp-all"`` (:class:`SignalTakesAll`): all to the signal ``s``,
    none to the gate ``g``.
    """
    return product_rule(rule).split(s, g, relevance)
