"""Oracle tests of the relevance engine ``gamer_mril.lrp``.

Written from docs/method.md#6-layer-wise-relevance-propagation and docs/lrp.md only (not
from the engine's code):

* every single-layer rule is checked against an explicit matrix-form computation written
  here (the convolution as an explicit matrix built by enumerating output positions and
  kernel offsets, replicate padding as an explicit copy matrix ``P``);
* the attention / classifier level is worked out by hand from ``m`` upward (explicit
  scalar arithmetic) and compared with the engine's per-contrast totals, which equal the
  relevance reaching ``m_l`` because a path with zero biases conserves relevance;
* conservation, the two product rules, integrated gradients, saliency and the twelve
  scenarios of Table I are checked at network level.

All computations in float64, on tiny networks (a few seconds in all).

Networks whose relevance must be conserved exactly ("conservative" networks below) have
every bias zero (BN running_mean and beta, Linear biases), random BN running_var and
gamma (some gammas negative), and non-negative weights in every conv after the stem.
The last point matters: by docs/method.md#61-canonization, a BN -> ReLU -> conv chain
with gamma < 0 becomes ``min(x, 0)`` followed by the conv, so a conv output that is
negative can receive relevance; with alpha1-beta0 such a neuron loses its relevance when
all its
contributions are negative (zero denominator). Non-negative weights after the stem make
every activation in a path non-negative, so every neuron that receives relevance has a
positive contribution and the method itself conserves relevance exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gamer_mril import lrp
from gamer_mril.network import build_model

DT = torch.float64
EPS = 1e-8
SHAPE = (15, 16, 17)                     # smallest legal sizes; feature map 1 x 1 x 1
ARCH = dict(growth=2, stem_channels=4)   # tiny paths (4 -> 8 channels per block)
L = 3


# ----------------------------------------------------------------------------------------
# helpers: models and inputs
# ----------------------------------------------------------------------------------------
#: one torch thread for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(batch, seed, signed=False):
    g = _gen(seed)
    shape = (batch, L) + SHAPE
    if signed:
        return torch.randn(shape, generator=g, dtype=DT)
    return torch.rand(shape, generator=g, dtype=DT)


def _randomize_bn(model, seed, zero_shift):
    """Non-trivial BN statistics; gamma of channel 0 negative, of the last channel positive,
    30 % of the others negative. ``zero_shift`` zeroes running_mean and beta."""
    g = _gen(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm3d):
                c = mod.num_features
                sign = torch.where(torch.rand(c, generator=g, dtype=DT) < 0.3, -1.0, 1.0)
                sign[0] = -1.0
                sign[-1] = 1.0
                mod.weight.copy_(sign * (0.5 + torch.rand(c, generator=g, dtype=DT)))
                mod.running_var.copy_(0.3 + torch.rand(c, generator=g, dtype=DT))
                if zero_shift:
                    mod.running_mean.zero_()
                    mod.bias.zero_()
                else:
                    mod.running_mean.copy_(0.3 * torch.randn(c, generator=g, dtype=DT))
                    mod.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=DT))


def _generic_model(seed=0, **kwargs):
    """Default-initialised small model with non-trivial BN (non-zero shifts), eval, float64."""
    model = build_model(SHAPE, seed=seed, **ARCH, **kwargs).to(DT)
    _randomize_bn(model, seed + 100, zero_shift=False)
    return model.eval()


def _conservative_model(seed, x, **kwargs):
    """All biases zero, random BN scales (some negative), conv weights >= 0 after the stem;
    head_fc rescaled so that max |m_l| over the batch ``x`` is 1 for every path."""
    model = build_model(SHAPE, seed=seed, **ARCH, **kwargs).to(DT)
    _randomize_bn(model, seed + 100, zero_shift=True)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv3d) and not name.endswith("stem.conv"):
                mod.weight.abs_()
            if isinstance(mod, (nn.Linear, nn.Conv3d)) and mod.bias is not None:
                mod.bias.zero_()
        model.eval()
        m = model.encode(x)
        for l, path in enumerate(model.paths):
            path.head_fc.weight /= m[:, l].abs().max()
    return model


def _details(model, x, age):
    with torch.no_grad():
        return model.eval()(x, age, return_details=True)


# ----------------------------------------------------------------------------------------
# 1. canonization
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True])
def test_canonize_preserves_forward_and_leaves_model_untouched(signed):
    model = build_model(SHAPE, seed=3, **ARCH).to(DT)      # training mode on purpose
    _randomize_bn(model, 7, zero_shift=False)
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm3d)])
    assert (gammas < 0).any() and (gammas > 0).any()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = _images(2, 11, signed=signed)
    age = torch.tensor([35.0, 62.5], dtype=DT)

    canon = lrp.canonize(model)

    assert model.training, "canonize changed the mode of the model it was given"
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"canonize modified {k} of the original model"
    ref = _details(model, x, age)
    with torch.no_grad():
        logit = canon(x, age)
        det = canon(x, age, return_details=True)
    assert logit.dtype == DT
    torch.testing.assert_close(logit, ref["logit"], rtol=1e-6, atol=1e-9)
    for key, want in ref.items():
        assert key in det, key
        torch.testing.assert_close(det[key], want, rtol=1e-6, atol=1e-9, msg=key)
    for k, v in before.items():   # running the copy does not touch the original either
        assert torch.equal(model.state_dict()[k], v), k


# ----------------------------------------------------------------------------------------
# 2. single-layer rules against explicit matrices
# ----------------------------------------------------------------------------------------
def _pad_matrix(shape, pad, mode):
    """P (Np, N): padded = P @ x for one sample of shape (C, D, H, W), flattened C-order."""
    C, D, H, W = shape
    Dp, Hp, Wp = D + 2 * pad, H + 2 * pad, W + 2 * pad
    P = np.zeros((C * Dp * Hp * Wp, C * D * H * W))
    for c, d, h, w in itertools.product(range(C), range(Dp), range(Hp), range(Wp)):
        sd, sh, sw = d - pad, h - pad, w - pad
        if mode == "replicate":
            sd, sh, sw = min(max(sd, 0), D - 1), min(max(sh, 0), H - 1), min(max(sw, 0), W - 1)
        elif not (0 <= sd < D and 0 <= sh < H and 0 <= sw < W):
            continue                              # zero padding: nothing copied
        P[np.ravel_multi_index((c, d, h, w), (C, Dp, Hp, Wp)),
          np.ravel_multi_index((c, sd, sh, sw), (C, D, H, W))] = 1.0
    return P


def _conv_matrix(padded_shape, weight, stride):
    """Wm (Np, No): conv output = padded @ Wm, by enumerating output positions and offsets."""
    C, Dp, Hp, Wp = padded_shape
    O, C2, k, _, _ = weight.shape
    assert C2 == C
    Do, Ho, Wo = [(n - k) // stride + 1 for n in (Dp, Hp, Wp)]
    Wm = np.zeros((C * Dp * Hp * Wp, O * Do * Ho * Wo))
    for o, od, oh, ow in itertools.product(range(O), range(Do), range(Ho), range(Wo)):
        j = np.ravel_multi_index((o, od, oh, ow), (O, Do, Ho, Wo))
        for kd, kh, kw in itertools.product(range(k), repeat=3):
            for c in range(C):
                i = np.ravel_multi_index(
                    (c, od * stride + kd, oh * stride + kh, ow * stride + kw), (C, Dp, Hp, Wp))
                Wm[i, j] += weight[o, c, kd, kh, kw]
    return Wm, (O, Do, Ho, Wo)


def _safe_div(num, den):
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    den_b = np.broadcast_to(den, out.shape)
    num_b = np.broadcast_to(num, out.shape)
    nz = den_b != 0
    out[nz] = num_b[nz] / den_b[nz]
    return out


def _conv_rule_reference(x, weight, relevance, stride, padding, mode, rule, low=0.0, high=1.0):
    """Per sample: R_pad_i = sum_j Zr_ij / sum_i' Zr_i'j R_j; R_x = P^T R_pad."""
    x, weight, relevance = (t.detach().numpy() for t in (x, weight, relevance))
    out = np.zeros_like(x)
    P = _pad_matrix(x.shape[1:], padding, mode)
    C, D, H, W = x.shape[1:]
    padded_shape = (C, D + 2 * padding, H + 2 * padding, W + 2 * padding)
    Wm, out_shape = _conv_matrix(padded_shape, weight, stride)
    assert relevance.shape[1:] == out_shape
    for b in range(x.shape[0]):
        xp = P @ x[b].ravel()
        Z = xp[:, None] * Wm
        if rule == "alpha1beta0":
            Zr = np.maximum(Z, 0.0)
        else:                                   # z^B
            Zr = Z - low * np.maximum(Wm, 0.0) - high * np.minimum(Wm, 0.0)
        den = Zr.sum(axis=0)
        R_pad = (_safe_div(Zr, den[None, :]) * relevance[b].ravel()[None, :]).sum(axis=1)
        out[b] = (P.T @ R_pad).reshape(x.shape[1:])
    return torch.from_numpy(out), (P, Wm)


def _conv_forward_sanity(x, weight, stride, padding, mode, P, Wm):
    """The reference matrices reproduce the convolution (checks the oracle, not the engine)."""
    mode_f = "constant" if mode == "zeros" else "replicate"
    xp = F.pad(x, (padding,) * 6, mode=mode_f) if padding else x
    y = F.conv3d(xp, weight, stride=stride)
    y_ref = (P @ x[0].numpy().ravel()) @ Wm
    np.testing.assert_allclose(y[0].numpy().ravel(), y_ref, rtol=1e-12, atol=1e-12)


CONV_CASES = [  # (kernel, stride, padding, padding_mode)
    (3, 1, 1, "zeros"), (3, 2, 1, "zeros"), (3, 1, 1, "replicate"), (3, 2, 1, "replicate"),
    (3, 1, 0, "zeros"), (3, 2, 0, "zeros"), (1, 1, 0, "zeros"),
]


@pytest.mark.parametrize("k,stride,padding,mode", CONV_CASES)
def test_alpha1beta0_conv_matches_matrix_form(k, stride, padding, mode):
    g = _gen(21)
    x = torch.randn((2, 2, 5, 4, 6), generator=g, dtype=DT)          # both signs
    x[0, 1, :2] = 0.0                                                  # some exact zeros
    weight = torch.randn((3, 2, k, k, k), generator=g, dtype=DT)
    out_sp = [(n + 2 * padding - k) // stride + 1 for n in x.shape[2:]]
    R = torch.randn((2, 3, *out_sp), generator=g, dtype=DT)
    want, (P, Wm) = _conv_rule_reference(x, weight, R, stride, padding, mode, "alpha1beta0")
    _conv_forward_sanity(x, weight, stride, padding, mode, P, Wm)
    got = lrp.alpha1beta0_conv(x, weight, R, stride=stride, padding=padding,
                               padding_mode=mode)
    assert got.shape == x.shape and got.dtype == DT
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("k,stride,padding,mode", CONV_CASES)
def test_zb_conv_matches_matrix_form(k, stride, padding, mode):
    g = _gen(22)
    x = torch.rand((2, 2, 5, 4, 6), generator=g, dtype=DT)           # in [0, 1]
    x[0, 0, 0] = 0.0                                                   # bounds reached
    x[1, 1, -1] = 1.0
    weight = torch.randn((3, 2, k, k, k), generator=g, dtype=DT)
    out_sp = [(n + 2 * padding - k) // stride + 1 for n in x.shape[2:]]
    R = torch.randn((2, 3, *out_sp), generator=g, dtype=DT)
    want, (P, Wm) = _conv_rule_reference(x, weight, R, stride, padding, mode, "zb")
    _conv_forward_sanity(x, weight, stride, padding, mode, P, Wm)
    got = lrp.zb_conv(x, weight, R, stride=stride, padding=padding, padding_mode=mode,
                      low=0.0, high=1.0)
    assert got.shape == x.shape and got.dtype == DT
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    got_default = lrp.zb_conv(x, weight, R, stride=stride, padding=padding,
                              padding_mode=mode)                       # bounds default 0, 1
    torch.testing.assert_close(got_default, want, rtol=1e-9, atol=1e-10)
    if mode == "replicate":      # replicate padding + z^B conserves over the real voxels
        np.testing.assert_allclose(got.sum(dim=(1, 2, 3, 4)).numpy(),
                                   R.sum(dim=(1, 2, 3, 4)).numpy(), rtol=1e-9)


@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_conv_rules_zero_denominators_give_zero(mode):
    # x >= 0 and output channel 0 has only negative weights: every z_ij <= 0 for it, so
    # alpha1-beta0 has zero denominators there. A zero block of x with output channel 1
    # having only positive weights gives z^B zero denominators (x w - 0 w+ - 1 w- = 0).
    g = _gen(23)
    x = torch.rand((1, 2, 5, 5, 5), generator=g, dtype=DT)
    x[:, :, :4] = 0.0
    weight = torch.randn((2, 2, 3, 3, 3), generator=g, dtype=DT)
    weight[0] = -weight[0].abs()
    weight[1] = weight[1].abs()
    R = torch.randn((1, 2, 5, 5, 5), generator=g, dtype=DT)
    for rule, fn in (("alpha1beta0", lrp.alpha1beta0_conv), ("zb", lrp.zb_conv)):
        want, _ = _conv_rule_reference(x, weight, R, 1, 1, mode, rule)
        got = fn(x, weight, R, stride=1, padding=1, padding_mode=mode)
        assert torch.isfinite(got).all(), rule
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=rule)
    # channel 0 alone: all of alpha1-beta0's relevance is dropped -> exactly zero
    R0 = R.clone()
    R0[:, 1] = 0.0
    got = lrp.alpha1beta0_conv(x, weight, R0, stride=1, padding=1, padding_mode=mode)
    assert torch.isfinite(got).all() and torch.all(got == 0)
    # channel 1 alone with x = 0 everywhere: z^B has only zero denominators
    R1 = R.clone()
    R1[:, 0] = 0.0
    got = lrp.zb_conv(torch.zeros_like(x), weight, R1, stride=1, padding=1, padding_mode=mode)
    assert torch.isfinite(got).all() and torch.all(got == 0)


def _epsilon_reference(x, w, R, eps):
    x, w, R = (t.numpy() for t in (x, w, R))
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        for j in range(w.shape[0]):
            zj = sum(x[b, i] * w[j, i] for i in range(x.shape[1]))
            den = zj + eps * (1.0 if zj >= 0 else -1.0)
            for i in range(x.shape[1]):
                out[b, i] += x[b, i] * w[j, i] / den * R[b, j]
    return torch.from_numpy(out)


def test_epsilon_linear_matches_explicit_sums():
    g = _gen(31)
    x = torch.randn((3, 5), generator=g, dtype=DT)
    x[2] = 0.0                                         # zero denominators: R = 0, no NaN
    w = torch.randn((4, 5), generator=g, dtype=DT)
    R = torch.randn((3, 4), generator=g, dtype=DT)
    got = lrp.epsilon_linear(x, w, R)
    want = _epsilon_reference(x, w, R, EPS)
    assert got.shape == x.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.all(got[2] == 0)
    # larger stabilizer, passed explicitly
    torch.testing.assert_close(lrp.epsilon_linear(x, w, R, eps=0.5),
                               _epsilon_reference(x, w, R, 0.5), rtol=1e-10, atol=1e-12)
    assert lrp.EPSILON == 1e-8
    # conservation when no output is near zero
    np.testing.assert_allclose(got[:2].sum(1).numpy(), R[:2].sum(1).numpy(), rtol=1e-6)


def _windows(n, k, s, p=0):
    return [list(range(o * s - p, o * s - p + k)) for o in range((n + 2 * p - k) // s + 1)]


def _avgpool_reference(x, R, k, s):
    x, R = x.numpy(), R.numpy()
    out = np.zeros_like(x)
    B, C, D, H, W = x.shape
    for b, c in itertools.product(range(B), range(C)):
        for (od, wd), (oh, wh), (ow, ww) in itertools.product(
                enumerate(_windows(D, k, s)), enumerate(_windows(H, k, s)),
                enumerate(_windows(W, k, s))):
            cells = list(itertools.product(wd, wh, ww))
            tot = sum(x[b, c, i, j, l] for i, j, l in cells)
            if tot == 0:
                continue
            for i, j, l in cells:
                out[b, c, i, j, l] += x[b, c, i, j, l] / tot * R[b, c, od, oh, ow]
    return torch.from_numpy(out)


@pytest.mark.parametrize("k,s,signed", [(2, 2, False), (2, 2, True), (2, 1, False),
                                        (3, 2, False)])
def test_avgpool_proportional(k, s, signed):
    g = _gen(41)
    x = (torch.randn if signed else torch.rand)((2, 2, 5, 4, 5), generator=g, dtype=DT)
    if not signed:
        x = x + 0.05
    x[0, 0, :2, :2, :2] = 0.0                          # a window of zeros: R = 0, no NaN
    out_sp = [(n - k) // s + 1 for n in x.shape[2:]]
    R = torch.randn((2, 2, *out_sp), generator=g, dtype=DT)
    got = lrp.avgpool(x, R, k, s)
    want = _avgpool_reference(x, R, k, s)
    assert got.shape == x.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    assert torch.all(got[0, 0, :2, :2, :2] == 0)


def _maxpool_reference(x, R, k, s, p):
    x, R = x.numpy(), R.numpy()
    out = np.zeros_like(x)
    B, C, D, H, W = x.shape
    for b, c in itertools.product(range(B), range(C)):
        for (od, wd), (oh, wh), (ow, ww) in itertools.product(
                enumerate(_windows(D, k, s, p)), enumerate(_windows(H, k, s, p)),
                enumerate(_windows(W, k, s, p))):
            cells = [(i, j, l) for i, j, l in itertools.product(wd, wh, ww)
                     if 0 <= i < D and 0 <= j < H and 0 <= l < W]
            win = max(cells, key=lambda t: x[b, c][t])
            out[b, c][win] += R[b, c, od, oh, ow]
    return torch.from_numpy(out)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_maxpool_to_the_winner(k, s, p):
    g = _gen(51)
    x = torch.randn((2, 2, 5, 6, 4), generator=g, dtype=DT)            # no ties
    out_sp = [(n + 2 * p - k) // s + 1 for n in x.shape[2:]]
    R = torch.randn((2, 2, *out_sp), generator=g, dtype=DT)
    got = lrp.maxpool(x, R, k, s, padding=p)
    want = _maxpool_reference(x, R, k, s, p)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.sum().item(), R.sum().item(), rtol=1e-10)


def test_maxpool_ties_follow_torch_indices():
    g = _gen(52)
    x = torch.zeros((1, 1, 4, 4, 4), dtype=DT)
    x[0, 0, 1:3, 1:3, 1:3] = 0.5                                       # many ties
    x[0, 0, 3, 3, 3] = -1.0
    R = torch.randn((1, 1, 2, 2, 2), generator=g, dtype=DT)
    _, idx = F.max_pool3d(x, 3, 2, padding=1, return_indices=True)
    want = torch.zeros(x.numel(), dtype=DT)
    want.index_add_(0, idx.flatten(), R.flatten())
    got = lrp.maxpool(x, R, 3, 2, padding=1)
    torch.testing.assert_close(got, want.reshape(x.shape), rtol=0, atol=1e-15)


def test_product_rules():
    s = torch.tensor([[0.6, -0.2, 0.0, 0.0, -0.9], [0.3, 0.0, 1.0, -0.5, 0.25]], dtype=DT)
    g = torch.tensor([[0.2, 0.8, 0.5, 0.0, -0.3], [0.7, 0.0, 0.0, 0.5, 0.75]], dtype=DT)
    R = torch.tensor([[1.0, -2.0, 3.0, 4.0, 0.5], [-1.5, 2.5, 1.0, -3.0, 2.0]], dtype=DT)
    rs, rg = lrp.product(s, g, R, "proposed")
    want_s = torch.zeros_like(R)
    want_g = torch.zeros_like(R)
    for i, j in itertools.product(range(2), range(5)):
        den = abs(s[i, j].item()) + abs(g[i, j].item())
        if den > 0:
            want_s[i, j] = abs(s[i, j].item()) / den * R[i, j].item()
            want_g[i, j] = abs(g[i, j].item()) / den * R[i, j].item()
    assert torch.isfinite(rs).all() and torch.isfinite(rg).all()
    torch.testing.assert_close(rs, want_s, rtol=1e-12, atol=0)
    torch.testing.assert_close(rg, want_g, rtol=1e-12, atol=0)
    # e.g. s = 0.6, g = 0.2, R = 1 -> 0.75 and 0.25; s = g = 0 -> 0 and 0
    assert math.isclose(rs[0, 0].item(), 0.75) and math.isclose(rg[0, 0].item(), 0.25)
    assert rs[0, 3] == 0 and rg[0, 3] == 0 and rs[1, 1] == 0 and rg[1, 1] == 0
    nz = (s.abs() + g.abs()) > 0
    torch.testing.assert_close((rs + rg)[nz], R[nz], rtol=1e-12, atol=0)

    rs, rg = lrp.product(s, g, R, "lrp-all")
    torch.testing.assert_close(rs, R, rtol=0, atol=0)
    assert torch.all(rg == 0)
    assert tuple(lrp.PRODUCT_RULES) == ("proposed", "lrp-all")


# ----------------------------------------------------------------------------------------
# 3. attention / classifier level worked out by hand
# ----------------------------------------------------------------------------------------
HAND_M = [[0.8, -0.5], [0.3, 0.9], [-0.6, 0.4]]              # m_l, hidden = 2
HAND_U = [[1.0, -0.5], [0.4, 0.8], [-0.7, 0.3]]              # attention_dim = 3
HAND_V = [[0.5, 1.0], [-1.2, 0.2], [0.3, -0.4]]
HAND_W = [0.9, -0.6, 1.3]
HAND_C = [1.5, -0.8, 2.0]                                    # classifier: n_1, n_2, age
HAND_AGE = 40.0


def _sgn(v):
    return 1.0 if v >= 0 else -1.0


def _stab(v):
    return v + EPS * _sgn(v)


def _hand_forward(m, U, V, w, c, age, bias=None):
    """Forward pass from m; ``bias`` = (b_U, b_V, b_w, b_c) or None (all zero). The keys
    pre_s, pre_g, e, f hold the bias-free sums (what the rules divide by); e_b and f_b
    include the biases (what the network computes)."""
    Lh, H, K = len(m), len(m[0]), len(U)
    bU, bV, bw, bc = bias if bias is not None else ([0.0] * K, [0.0] * K, 0.0, 0.0)
    pre_s = [[sum(U[k][j] * m[l][j] for j in range(H)) for k in range(K)] for l in range(Lh)]
    pre_g = [[sum(V[k][j] * m[l][j] for j in range(H)) for k in range(K)] for l in range(Lh)]
    s = [[math.tanh(pre_s[l][k] + bU[k]) for k in range(K)] for l in range(Lh)]
    g = [[1.0 / (1.0 + math.exp(-(pre_g[l][k] + bV[k]))) for k in range(K)]
         for l in range(Lh)]
    u = [[s[l][k] * g[l][k] for k in range(K)] for l in range(Lh)]
    e = [sum(w[k] * u[l][k] for k in range(K)) for l in range(Lh)]
    e_b = [v + bw for v in e]
    emax = max(e_b)
    ex = [math.exp(v - emax) for v in e_b]
    a = [v / sum(ex) for v in ex]
    n = [sum(a[l] * m[l][k] for l in range(Lh)) for k in range(H)]
    z = n + [age / 100.0]
    f = sum(c[j] * z[j] for j in range(H + 1))
    return dict(pre_s=pre_s, pre_g=pre_g, s=s, g=g, u=u, e=e, e_b=e_b, a=a, n=n, z=z, f=f,
                f_b=f + bc)


def _hand_relevance(m, U, V, w, c, age, start, rule, bias=None):
    """Relevance reaching every m_lk and age, docs/method.md#64-where-relevance-starts
    step by step. Biases enter the forward pass only; every rule divides by the bias-free
    sum z_j = sum_i z_ij."""
    fw = _hand_forward(m, U, V, w, c, age, bias)
    Lh, H, K = len(m), len(m[0]), len(U)
    R_m = [[0.0] * H for _ in range(Lh)]
    R_e = [0.0] * Lh
    R_age = 0.0
    if start == "logit":
        f, z, n, a = fw["f"], fw["z"], fw["n"], fw["a"]
        R_f = fw["f_b"]                                                   # start: f(x)
        R_z = [z[j] * c[j] / _stab(f) * R_f for j in range(H + 1)]    # classifier, epsilon
        R_age = R_z[H]
        for k in range(H):
            for l in range(Lh):
                R_prod = a[l] * m[l][k] / _stab(n[k]) * R_z[k]           # n_k, epsilon
                if rule == "proposed":
                    den = abs(m[l][k]) + abs(a[l])
                    if den > 0:
                        R_m[l][k] += abs(m[l][k]) / den * R_prod          # signal m_lk
                        R_e[l] += abs(a[l]) / den * R_prod                # gate a_l -> e_l
                else:
                    R_m[l][k] += R_prod
    else:
        R_e[start] = fw["a"][start]
    for l in range(Lh):
        if R_e[l] == 0.0:
            continue
        for k in range(K):
            R_u = w[k] * fw["u"][l][k] / _stab(fw["e"][l]) * R_e[l]       # att_w, epsilon
            s, g = fw["s"][l][k], fw["g"][l][k]
            if rule == "proposed":
                den = abs(s) + abs(g)
                R_s = abs(s) / den * R_u if den > 0 else 0.0
                R_g = abs(g) / den * R_u if den > 0 else 0.0
            else:
                R_s, R_g = R_u, 0.0
            for j in range(H):                                              # U, V: epsilon
                R_m[l][j] += U[k][j] * m[l][j] / _stab(fw["pre_s"][l][k]) * R_s
                R_m[l][j] += V[k][j] * m[l][j] / _stab(fw["pre_g"][l][k]) * R_g
    return np.array(R_m), R_age, fw


def _hand_model(U=HAND_U, V=HAND_V, w=HAND_W, seed=5, conservative=True):
    """Tiny model (hidden 2, attention_dim 3) with m = HAND_M exactly and hand-set U, V, w,
    classifier (biases zero). ``conservative=False``: default (signed) conv weights and BN
    with non-zero shifts, which LRP ignores (relevance below m is then not conserved, but
    it is still linear in the relevance reaching m)."""
    x = _images(1, 61)
    age = torch.tensor([HAND_AGE], dtype=DT)
    if conservative:
        model = _conservative_model(seed, x, hidden=2, attention_dim=3)
    else:
        model = _generic_model(seed, hidden=2, attention_dim=3)
    with torch.no_grad():
        model.paths.apply(lambda mod: mod.bias.zero_() if isinstance(mod, nn.Linear) else None)
        m0 = model.encode(x)[0]
        for l, path in enumerate(model.paths):          # set m exactly to HAND_M (linear)
            target = torch.tensor(HAND_M[l], dtype=DT)
            assert torch.all(m0[l].abs() > 1e-3)
            path.head_fc.weight *= (target / m0[l]).unsqueeze(1)
        model.att_U.weight.copy_(torch.tensor(U, dtype=DT))
        model.att_V.weight.copy_(torch.tensor(V, dtype=DT))
        model.att_w.weight.copy_(torch.tensor([w], dtype=DT))
        model.classifier.weight.copy_(torch.tensor([HAND_C], dtype=DT))
        for lin in (model.att_U, model.att_V, model.att_w, model.classifier):
            lin.bias.zero_()
    return model, x, age


def _explain_all(model, x, age):
    out = {}
    for rule in ("proposed", "lrp-all"):
        out[("logit", rule)] = lrp.explain(model, x, age, start="logit", rule=rule)
        for l in range(L):
            out[(l, rule)] = lrp.explain(model, x, age, start=l, rule=rule)
    return out


def test_attention_level_relevance_by_hand():
    """m = HAND_M, hand-set U, V, w, classifier; relevance from m upward by hand. The path
    below m_l conserves relevance (zero biases, non-negative weights after the stem), so
    the voxel total of contrast l equals the relevance reaching m_l. (From the logit this
    total is the same under both product rules: what the gate a_l takes under "proposed"
    comes back into m_l through e_l, U and V; the rules differ in how it is split over the
    components of m_l, checked in the next test.)"""
    model, x, age = _hand_model()
    det = _details(model, x, age)
    torch.testing.assert_close(det["m"][0], torch.tensor(HAND_M, dtype=DT), rtol=1e-12,
                               atol=1e-14)
    m = det["m"][0].tolist()
    fw = _hand_forward(m, HAND_U, HAND_V, HAND_W, HAND_C, HAND_AGE)
    assert math.isclose(fw["f"], det["logit"].item(), rel_tol=1e-10)
    np.testing.assert_allclose(fw["a"], det["a"][0].numpy(), rtol=1e-10)

    maps = _explain_all(model, x, age)
    hand = {}
    for key, r in maps.items():
        start, rule = key
        R_m, R_age, _ = _hand_relevance(m, HAND_U, HAND_V, HAND_W, HAND_C, HAND_AGE,
                                        start, rule)
        hand[key] = R_m
        assert r.voxels.shape == (1, L) + SHAPE
        want_start = fw["f"] if start == "logit" else fw["a"][start]
        np.testing.assert_allclose(r.start.numpy(), [want_start], rtol=1e-9, err_msg=str(key))
        # path conservation: sum of channel l's voxel relevance = relevance reaching m_l
        np.testing.assert_allclose(r.voxels[0].sum(dim=(1, 2, 3)).numpy(), R_m.sum(axis=1),
                                   rtol=1e-6, atol=1e-9, err_msg=str(key))
        np.testing.assert_allclose(r.age.numpy(), [R_age], rtol=1e-9, atol=1e-12,
                                   err_msg=str(key))
    # age: z_age c_age = 0.4 * 2.0, whatever the rule
    assert math.isclose(maps[("logit", "proposed")].age.item(), 0.8, rel_tol=1e-6)


def test_attention_level_split_over_m_components_by_hand():
    """Below m_l every rule is linear in the relevance arriving from above (coefficients
    depend on the forward pass only), so every map of path l is J_l R(m_l) with one
    (voxels x 2) matrix J_l and the hand vector R(m_l) (hidden = 2). Recover J_l from the
    two LRP-all maps and predict both proposed maps from the hand R(m_l): this checks the
    split over the components of m_l, not only its total. Signed conv weights are used
    here: with non-negative weights all maps of a path are proportional to within ~1e-5,
    which would leave J_l ill-determined."""
    model, x, age = _hand_model(conservative=False)
    det = _details(model, x, age)
    torch.testing.assert_close(det["m"][0], torch.tensor(HAND_M, dtype=DT), rtol=1e-12,
                               atol=1e-14)
    m = det["m"][0].tolist()
    maps = _explain_all(model, x, age)
    hand = {key: _hand_relevance(m, HAND_U, HAND_V, HAND_W, HAND_C, HAND_AGE, *key)[0]
            for key in maps}
    for key, r in maps.items():
        np.testing.assert_allclose(r.age.numpy(),
                                   [0.8 if key[0] == "logit" else 0.0], rtol=1e-6, atol=0)
    for l in range(L):
        basis_r = np.stack([hand[(l, "lrp-all")][l], hand[("logit", "lrp-all")][l]], axis=1)
        assert np.linalg.cond(basis_r) < 50, "hand values chosen badly"
        basis_maps = torch.stack([maps[(l, "lrp-all")].voxels[0, l].flatten(),
                                  maps[("logit", "lrp-all")].voxels[0, l].flatten()],
                                 dim=1).numpy()
        J = basis_maps @ np.linalg.inv(basis_r)
        sv = np.linalg.svd(J, compute_uv=False)
        # alpha1-beta0 spreads relevance with non-negative coefficients, so deep maps are
        # close to proportional (J_l nearly rank 1); the second direction is still well
        # above float64 noise, and the tolerance below is set far under it.
        assert sv[1] > 1e-3 * sv[0], "J_l nearly rank 1: the check below would be void"
        for start in (l, "logit"):
            got = maps[(start, "proposed")].voxels[0, l].flatten().numpy()
            want = J @ hand[(start, "proposed")][l]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max(),
                                       err_msg=f"path {l}, start {start}, proposed")
        # proposed and LRP-all differ voxel-wise from the logit (same total per path)
        diff = (maps[("logit", "proposed")].voxels[0, l]
                - maps[("logit", "lrp-all")].voxels[0, l]).abs().max()
        assert diff > 1e-2 * maps[("logit", "lrp-all")].voxels[0, l].abs().max()


def test_attention_level_biases_are_ignored_by_hand():
    """Non-zero biases in head_fc, U, V, w and the classifier: they change the forward pass
    (hence s, g, e, a, f) but no rule divides by them, so the relevance still starts at
    f(x) (or a_l), is conserved, and reaches m_l as the hand computation says."""
    bias = ([0.3, -0.2, 0.1], [-0.4, 0.25, 0.5], 0.35, -0.6)
    model, x, age = _hand_model()
    with torch.no_grad():
        model.att_U.bias.copy_(torch.tensor(bias[0], dtype=DT))
        model.att_V.bias.copy_(torch.tensor(bias[1], dtype=DT))
        model.att_w.bias.fill_(bias[2])
        model.classifier.bias.fill_(bias[3])
        for l, path in enumerate(model.paths):
            path.head_fc.bias.copy_(torch.tensor([0.1 * (l + 1), -0.05], dtype=DT))
    det = _details(model, x, age)
    m = det["m"][0].tolist()
    fw = _hand_forward(m, HAND_U, HAND_V, HAND_W, HAND_C, HAND_AGE, bias)
    assert math.isclose(fw["f_b"], det["logit"].item(), rel_tol=1e-10)
    np.testing.assert_allclose(fw["a"], det["a"][0].numpy(), rtol=1e-10)
    for rule in ("proposed", "lrp-all"):
        for start in ["logit"] + list(range(L)):
            r = lrp.explain(model, x, age, start=start, rule=rule)
            R_m, R_age, _ = _hand_relevance(m, HAND_U, HAND_V, HAND_W, HAND_C, HAND_AGE,
                                            start, rule, bias)
            want_start = fw["f_b"] if start == "logit" else fw["a"][start]
            np.testing.assert_allclose(r.start.numpy(), [want_start], rtol=1e-9)
            np.testing.assert_allclose(r.voxels[0].sum(dim=(1, 2, 3)).numpy(),
                                       R_m.sum(axis=1), rtol=1e-6, atol=1e-9,
                                       err_msg=f"{start}, {rule}")
            np.testing.assert_allclose(r.age.numpy(), [R_age], rtol=1e-9, atol=1e-12)
            total = r.voxels.sum().item() + r.age.item()
            assert math.isclose(total, R_m.sum() + R_age, rel_tol=1e-6), (start, rule)
            # conserved up to the stabilizers (some bias-free sums here are ~1e-2)
            assert math.isclose(total, want_start, rel_tol=1e-5), (start, rule)


# ----------------------------------------------------------------------------------------
# 4. conservation
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conservative():
    x = _images(2, 71)
    age = torch.tensor([28.0, 57.0], dtype=DT)
    model = _conservative_model(9, x, hidden=6, attention_dim=4)
    det = _details(model, x, age)
    assert det["e"].abs().min() > 0.02, "premise: |e_l| well above the epsilon stabilizer"
    assert det["m"].abs().min() > 1e-4
    return model, x, age, det


@pytest.mark.parametrize("rule", ["proposed", "lrp-all"])
def test_conservation_from_logit(conservative, rule):
    model, x, age, det = conservative
    r = lrp.explain(model, x, age, start="logit", rule=rule)
    assert r.voxels.shape == x.shape and r.age.shape == (2,) and r.start.shape == (2,)
    assert r.voxels.dtype == DT
    assert torch.isfinite(r.voxels).all()
    np.testing.assert_allclose(r.start.numpy(), det["logit"].numpy(), rtol=1e-9)
    total = r.voxels.sum(dim=(1, 2, 3, 4)) + r.age
    np.testing.assert_allclose(total.numpy(), det["logit"].numpy(), rtol=1e-6)
    # every contrast receives relevance
    assert torch.all(r.voxels.abs().sum(dim=(2, 3, 4)) > 0)


@pytest.mark.parametrize("rule", ["proposed", "lrp-all"])
def test_conservation_from_attention_weights(conservative, rule):
    model, x, age, det = conservative
    totals = torch.zeros(2, dtype=DT)
    for l in range(L):
        r = lrp.explain(model, x, age, start=l, rule=rule)
        assert torch.isfinite(r.voxels).all()
        np.testing.assert_allclose(r.start.numpy(), det["a"][:, l].numpy(), rtol=1e-9)
        for other in range(L):
            if other != l:
                assert torch.all(r.voxels[:, other] == 0), (l, other)
        assert torch.all(r.age == 0)
        tot = r.voxels[:, l].sum(dim=(1, 2, 3))
        np.testing.assert_allclose(tot.numpy(), det["a"][:, l].numpy(), rtol=1e-6)
        totals += tot
    np.testing.assert_allclose(totals.numpy(), [1.0, 1.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------
# 5. product rule at network level
# ----------------------------------------------------------------------------------------
def test_lrp_all_ignores_the_attention_branch():
    """LRP-all gives the gate a_l nothing, so from the logit the map cannot depend on
    U and V once a is fixed. Replace U, V by other matrices and solve the 3 x 3 linear
    system for w so that every e_l (hence a, n and f) is unchanged."""
    model, x, age = _hand_model()
    det = _details(model, x, age)
    U2 = [[-0.3, 1.1], [0.9, 0.2], [0.5, -1.0]]
    V2 = [[1.4, -0.3], [0.1, 0.6], [-0.8, -0.7]]
    m = det["m"][0].tolist()
    fw2 = _hand_forward(m, U2, V2, [0.0, 0.0, 0.0], HAND_C, HAND_AGE)
    w2 = np.linalg.solve(np.array(fw2["u"]), det["e"][0].numpy())
    assert np.abs(w2).max() < 100
    model2, _, _ = _hand_model(U=U2, V=V2, w=w2.tolist())
    det2 = _details(model2, x, age)
    torch.testing.assert_close(det2["a"], det["a"], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(det2["logit"], det["logit"], rtol=1e-10, atol=1e-13)

    r1 = lrp.explain(model, x, age, start="logit", rule="lrp-all")
    r2 = lrp.explain(model2, x, age, start="logit", rule="lrp-all")
    scale = r1.voxels.abs().max()
    torch.testing.assert_close(r2.voxels, r1.voxels, rtol=1e-7, atol=1e-9 * scale)
    torch.testing.assert_close(r2.age, r1.age, rtol=1e-9, atol=1e-13)
    # the proposed rule does send relevance through U and V, so its map changes
    p1 = lrp.explain(model, x, age, start="logit", rule="proposed")
    p2 = lrp.explain(model2, x, age, start="logit", rule="proposed")
    assert (p2.voxels - p1.voxels).abs().max() > 1e-3 * p1.voxels.abs().max()
    # with LRP-all the relevance of path l is exactly its contribution to f through n:
    # sum_k a_l m_lk c_k (per hand arithmetic)
    a = det["a"][0].tolist()
    for l in range(L):
        contrib = sum(a[l] * m[l][k] * HAND_C[k] for k in range(2))
        np.testing.assert_allclose(r1.voxels[0, l].sum().item(), contrib, rtol=1e-6)


# ----------------------------------------------------------------------------------------
# 6. baselines: integrated gradients and saliency
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generic():
    model = _generic_model(seed=13, hidden=6, attention_dim=4)
    x = _images(2, 81)
    age = torch.tensor([44.0, 31.0], dtype=DT)
    return model, x, age


def _target_value(model, x, age, target):
    det = model(x, age, return_details=True)
    return det["logit"] if target == "logit" else det["a"][:, target]


def _reference_ig(model, x, age, target, steps):
    total = torch.zeros_like(x)
    for i in range(steps):
        xi = (x * ((i + 0.5) / steps)).detach().requires_grad_(True)
        y = _target_value(model, xi, age, target)
        total += torch.autograd.grad(y.sum(), xi)[0]
    return x * total / steps


def _reference_saliency(model, x, age, target):
    xi = x.detach().clone().requires_grad_(True)
    y = _target_value(model, xi, age, target)
    return torch.autograd.grad(y.sum(), xi)[0].abs()


@pytest.mark.parametrize("target", ["logit", 0, 2])
def test_integrated_gradients_midpoint_rule(generic, target):
    """Zero baseline, age held, midpoint Riemann rule with ``steps`` points (autograd here)."""
    model, x, age = generic
    ig = lrp.integrated_gradients(model, x, age, target=target, steps=8)
    assert ig.shape == x.shape and ig.dtype == DT
    torch.testing.assert_close(ig, _reference_ig(model, x, age, target, 8), rtol=1e-8,
                               atol=1e-12)


@pytest.mark.parametrize("target", ["logit", 0, 2])
def test_integrated_gradients_completeness(conservative, target):
    """sum over voxels ~ y(x) - y(zero images, same age). In the bias-free network every
    path is positively homogeneous (m(t x) = t m(x)), so y is smooth along the straight
    path and the midpoint rule converges as 1/steps^2: 32 steps give a tight tolerance."""
    model, x, age, _ = conservative
    ig = lrp.integrated_gradients(model, x, age, target=target, steps=32)
    with torch.no_grad():
        delta = (_target_value(model, x, age, target)
                 - _target_value(model, torch.zeros_like(x), age, target))
    assert delta.abs().min() > 1e-2
    np.testing.assert_allclose(ig.sum(dim=(1, 2, 3, 4)).numpy(), delta.numpy(), rtol=2e-4)
    if target != "logit":      # y = a_l depends on every contrast through the softmax
        assert torch.all(ig.abs().sum(dim=(2, 3, 4)) > 0)


@pytest.mark.parametrize("target", ["logit", 1])
def test_saliency_is_abs_gradient(generic, target):
    model, x, age = generic
    sal = lrp.saliency(model, x, age, target=target)
    assert sal.shape == x.shape and sal.dtype == DT
    torch.testing.assert_close(sal, _reference_saliency(model, x, age, target), rtol=1e-8,
                               atol=1e-14)


# ----------------------------------------------------------------------------------------
# 7. the twelve scenarios of Table I
# ----------------------------------------------------------------------------------------
SCENARIO_TABLE = {  # number: (start, rule, kind) for the LRP scenarios
    1: ("aw", "proposed", "individual"), 2: ("aw", "lrp-all", "individual"),
    3: ("aw", "proposed", "combined"), 4: ("aw", "lrp-all", "combined"),
    5: ("f", "proposed", "individual"), 6: ("f", "lrp-all", "individual"),
    7: ("f", "proposed", "combined"), 8: ("f", "lrp-all", "combined"),
}


def test_scenario_table():
    # Table I's twelve keep their numbers; the table goes on beyond them (13-20)
    assert sorted(lrp.SCENARIOS)[:12] == list(range(1, 13))
    for number, sc in lrp.SCENARIOS.items():
        assert sc.number == number
    for number, (start, rule, kind) in SCENARIO_TABLE.items():
        sc = lrp.SCENARIOS[number]
        assert (sc.start, sc.method, sc.rule, sc.kind) == (start, "lrp", rule, kind), number
    for number, start, method in ((9, "aw", "sal"), (10, "aw", "ig"), (11, "f", "sal"),
                                  (12, "f", "ig")):
        sc = lrp.SCENARIOS[number]
        assert sc.start == start and sc.kind == "individual", number
        name = str(sc.method).lower()
        if method == "sal":
            assert "sal" in name, (number, sc.method)
        else:
            assert name == "ig" or "integrated" in name, (number, sc.method)


def test_scenario_maps(generic):
    model, x, age = generic
    maps = lrp.scenario_maps(model, x, age, scenarios=range(1, 13), ig_steps=4)
    assert sorted(maps) == list(range(1, 13))
    for number, t in maps.items():
        want = x.shape if number not in (3, 4, 7, 8) else (x.shape[0],) + SHAPE
        assert tuple(t.shape) == tuple(want), number
        assert torch.isfinite(t).all(), number

    tol = dict(rtol=1e-9, atol=1e-13)
    ind = {}
    for rule, n_aw, n_f in (("proposed", 1, 5), ("lrp-all", 2, 6)):
        aw = torch.zeros_like(x)
        for l in range(L):
            aw[:, l] = lrp.explain(model, x, age, start=l, rule=rule).voxels[:, l]
        f = lrp.explain(model, x, age, start="logit", rule=rule).voxels
        torch.testing.assert_close(maps[n_aw], aw, **tol, msg=f"scenario {n_aw}")
        torch.testing.assert_close(maps[n_f], f, **tol, msg=f"scenario {n_f}")
        ind[n_aw], ind[n_f] = aw, f
    # combined map (eq. 8) = sum_l R_l * x_l of the matching individual scenario
    for comb, single in ((3, 1), (4, 2), (7, 5), (8, 6)):
        want = (ind[single] * x).sum(dim=1)
        torch.testing.assert_close(maps[comb], want, **tol, msg=f"scenario {comb}")
        torch.testing.assert_close(maps[comb], (maps[single] * x).sum(dim=1), **tol)
    # scenarios 1 and 2 differ, and so do 1 and 5 (different starts)
    assert not torch.allclose(maps[1], maps[2])
    assert not torch.allclose(maps[1], maps[5])

    sal_aw = torch.zeros_like(x)
    ig_aw = torch.zeros_like(x)
    for l in range(L):
        sal_aw[:, l] = _reference_saliency(model, x, age, l)[:, l]
        ig_aw[:, l] = _reference_ig(model, x, age, l, 4)[:, l]
    torch.testing.assert_close(maps[9], sal_aw, rtol=1e-8, atol=1e-14, msg="scenario 9")
    torch.testing.assert_close(maps[10], ig_aw, rtol=1e-8, atol=1e-14, msg="scenario 10")
    torch.testing.assert_close(maps[11], _reference_saliency(model, x, age, "logit"),
                               rtol=1e-8, atol=1e-14, msg="scenario 11")
    torch.testing.assert_close(maps[12], _reference_ig(model, x, age, "logit", 4),
                               rtol=1e-8, atol=1e-14, msg="scenario 12")


def test_scenario_maps_subset(generic):
    model, x, age = generic
    maps = lrp.scenario_maps(model, x, age, scenarios=[3, 5])
    assert sorted(maps) == [3, 5]
    full = lrp.scenario_maps(model, x, age, scenarios=range(1, 9))
    torch.testing.assert_close(maps[3], full[3], rtol=1e-12, atol=0)
    torch.testing.assert_close(maps[5], full[5], rtol=1e-12, atol=0)
