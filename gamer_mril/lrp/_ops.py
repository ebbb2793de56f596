"""Tensor helpers shared by the relevance rules (docs/method.md#62-rules-per-layer).

Reciprocals that give zero relevance for a zero denominator, the product of a batch of
stacked walks with tensors of one forward pass, the adjoint of a conv (how a conv rule
sends relevance back) and of replicate padding, the prepared conv and pooling rules
(the arithmetic a rule class sets up on one forward pass), and the parsing of a start/target
argument shared by the relevance walk and the gradient baselines. Nothing here knows
which rule a layer gets.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F


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


def _stabilizer_sign(z: torch.Tensor) -> torch.Tensor:
    """sign(z) with sign(0) = +1, the sign of the epsilon rule's stabiliser."""
    return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def _stabilized_reciprocal(z: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / (z + eps * sign(z)) with sign(0) = +1; 0 if that is still 0 (eps = 0, z = 0)."""
    return _safe_reciprocal(z + eps * _stabilizer_sign(z))


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


def _pad_input(x, padding, padding_mode):
    """(input as a conv sees it, padding left to the conv, replicate padding or None)."""
    if padding_mode == "replicate" and any(padding):
        return F.pad(x, _pad6(padding), mode="replicate"), (0, 0, 0), padding
    return x, padding, None


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
            return self._shifted_sum(s)
        return F.conv_transpose3d(s, self.weight, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding)

    def _shifted_sum(self, s):
        n, c = s.shape[0], self.weight.shape[1]
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


class _ConvRule:
    """A conv rule prepared on one input: ``R_in = sum_t c_t * T(R / den, w_t)``.

    ``T`` is the adjoint of the conv (a transposed convolution). The rule is a list of
    terms ``(c_t, w_t)`` with ``c_t`` a tensor (an input of the conv) or a number; for
    alpha1-beta0 they are ``(x+, w+)`` and ``(x-, w-)``, for z^B ``(x, w)``,
    ``(-low, w+)`` and ``(-high, w-)``. All the weights are stacked into one adjoint.
    ``den`` is the rule's denominator (0 gives 0); with ``replicate_pad`` the inputs are
    the padded input and the result is folded back by the adjoint of the padding.

    ``out_split`` (a list of ``M`` masks of the output's shape, or None) lets the weights
    differ between groups of output neurons (the gamma rule: one set for the neurons with
    a positive output, another for the negative): ``R / den`` is then cut into the ``M``
    masked copies, stacked along the channels, and every ``w_t`` has ``M * O`` output
    channels, block ``m`` the weights of the neurons in mask ``m``.
    """

    def __init__(self, terms, den, in_size, stride, conv_padding, replicate_pad,
                 out_split=None):
        self.inputs = [t for t, _ in terms]
        self.channels = [w.shape[1] for _, w in terms]
        weight = torch.cat([w for _, w in terms], dim=1) if len(terms) > 1 else terms[0][1]
        self.adjoint = _Adjoint(weight, stride, conv_padding, in_size, tuple(den.shape[2:]))
        self.inv_den = _safe_reciprocal(den)
        self.split = None if out_split is None else [self.inv_den * m for m in out_split]
        self.replicate_pad = replicate_pad

    def __call__(self, relevance: torch.Tensor) -> torch.Tensor:
        if self.split is None:
            t = self.adjoint(_bmul(relevance, self.inv_den))
        else:
            t = self.adjoint(torch.cat([_bmul(relevance, f) for f in self.split], dim=1))
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



def _parse_start(start, n_paths):
    """``"logit"`` or a contrast index in ``0..n_paths - 1`` (an int), else ValueError."""
    if isinstance(start, str):
        if start != "logit":
            raise ValueError(f"start must be 'logit' or a contrast index, got {start!r}")
        return start
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise ValueError(f"start must be 'logit' or a contrast index, got {start!r}")
    if not 0 <= int(start) < n_paths:
        raise ValueError(f"contrast index {start} out of range 0..{n_paths - 1}")
    return int(start)
