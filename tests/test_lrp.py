"""Tests of the relevance engine gamer_mril.lrp (float64, tiny networks).

Single-layer rules are compared with dense-matrix references built here (the conv and
the padding as explicit matrices obtained by pushing one-hot inputs through them); the
network-level tests check canonization, conservation, the product rules, the gradient
baselines, the scenario maps and batch consistency.

"Conservative" networks have every bias zero (BN running_mean and beta, Linear biases)
and non-negative conv weights after the stem. The last condition is needed for exact
conservation: with a negative gamma the canonized chain is ``min(x, 0) -> conv``, so a
negative activation can take relevance, and alpha1-beta0 drops the relevance of a neuron
whose contributions are all negative (zero denominator). With non-negative weights after
the stem every activation of a path is >= 0 and nothing is dropped by the method.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gamer_mril import lrp
from gamer_mril.network import build_model
from lrp_reference import ReferenceLRP

DT = torch.float64
SHAPE = (15, 16, 17)                       # smallest legal input; 1 x 1 x 1 features
ARCH = dict(growth=2, stem_channels=4, hidden=6, attention_dim=4)
L = 3


#: one torch thread for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _images(batch, seed):
    return torch.rand((batch, L) + SHAPE, generator=_gen(seed), dtype=DT)


def _ages(batch, seed):
    return 20.0 + 50.0 * torch.rand(batch, generator=_gen(seed), dtype=DT)


def _set_bn(model, seed, zero_shift, zero_gamma=False):
    """Random BN statistics; about a third of the gammas negative (channel 0 always);
    with ``zero_gamma`` the last channel of every BN has gamma exactly 0."""
    g = _gen(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm3d):
                c = mod.num_features
                sign = torch.where(torch.rand(c, generator=g, dtype=DT) < 0.35, -1.0, 1.0)
                sign[0] = -1.0
                gamma = sign * (0.5 + torch.rand(c, generator=g, dtype=DT))
                if zero_gamma:
                    gamma[-1] = 0.0
                mod.weight.copy_(gamma)
                mod.running_var.copy_(0.3 + torch.rand(c, generator=g, dtype=DT))
                if zero_shift:
                    mod.running_mean.zero_()
                    mod.bias.zero_()
                else:
                    mod.running_mean.copy_(0.3 * torch.randn(c, generator=g, dtype=DT))
                    mod.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=DT))


def _generic_model(seed=0, zero_gamma=False):
    """Default initialisation, non-trivial BN, head FC scaled up (so that f and a react
    to the images by more than a few thousandths), eval mode."""
    model = build_model(SHAPE, seed=seed, **ARCH).to(DT)
    _set_bn(model, seed + 100, zero_shift=False, zero_gamma=zero_gamma)
    with torch.no_grad():
        for path in model.paths:
            path.head_fc.weight *= 10.0
    return model.eval()


def _conservative_model(seed, x):
    model = build_model(SHAPE, seed=seed, **ARCH).to(DT)
    _set_bn(model, seed + 100, zero_shift=True)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv3d) and not name.endswith("stem.conv"):
                mod.weight.abs_()
            if isinstance(mod, nn.Linear):
                mod.bias.zero_()
        model.eval()
        m = model.encode(x)                  # keep |m| ~ 1 and |e| ~ 1: every epsilon
        for l, path in enumerate(model.paths):          # denominator far above 1e-8
            path.head_fc.weight /= m[:, l].abs().max()
        e = model(x, torch.zeros(x.shape[0], dtype=DT), return_details=True)["e"].detach()
        model.att_w.weight /= e.abs().max()
    return model


def _details(model, x, age):
    with torch.no_grad():
        return model(x, age, return_details=True)


@pytest.fixture(scope="module")
def generic():
    return _generic_model(seed=4), _images(2, 5), _ages(2, 6)


@pytest.fixture(scope="module")
def conservative():
    x = _images(2, 7)
    age = _ages(2, 8)
    model = _conservative_model(21, x)
    det = _details(model, x, age)
    # premises: every epsilon denominator is at least 1e6 times the stabiliser
    U, V = model.att_U.weight, model.att_V.weight
    for z in (det["e"], det["m"] @ U.t(), det["m"] @ V.t(), det["n"], det["logit"]):
        assert z.abs().min() > 0.02
    return model, x, age, det


# ----------------------------------------------------------------------------------------
# canonization
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("zero_gamma", [False, True])
def test_canonized_forward_equals_original(zero_gamma):
    model = build_model(SHAPE, seed=1, **ARCH).to(DT)           # left in training mode
    _set_bn(model, 2, zero_shift=False, zero_gamma=zero_gamma)
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm3d)])
    assert (gammas < 0).sum() > 5 and (gammas > 0).sum() > 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canon = lrp.canonize(model)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(m, nn.BatchNorm3d) for m in canon.modules())
    x = torch.cat([_images(2, 3), -0.5 + 2 * _images(1, 4)])    # also outside [0, 1]
    age = _ages(3, 5)
    ref = _details(model.eval(), x, age)
    with torch.no_grad():
        got = canon(x, age, return_details=True)
        logit = canon(x, age)
    assert set(got) == set(ref)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-9, atol=1e-12, msg=key)
    torch.testing.assert_close(logit, ref["logit"], rtol=1e-9, atol=1e-12)
    assert logit.dtype == DT
    # the clamps are really in use: a different threshold per channel, both directions
    clamps = [m for m in canon.modules() if isinstance(m, lrp.Clamp)]
    assert len(clamps) == L * (4 * 2 + 3 + 1)       # per path: dense bn1, transitions, head
    lo = torch.cat([c.lo.flatten() for c in clamps])
    hi = torch.cat([c.hi.flatten() for c in clamps])
    assert torch.isfinite(lo).any() and torch.isfinite(hi).any()
    identity = (torch.isinf(lo) & torch.isinf(hi)).sum().item()
    assert identity == (len(clamps) if zero_gamma else 0)   # gamma = 0: identity clamp


def test_canonize_threshold_formula():
    model = _generic_model(seed=3)
    bn = model.paths[1].transitions[0].bn
    canon = lrp.canonize(model)
    clamp = canon.paths[1].transitions[0].clamp
    sigma = torch.sqrt(bn.running_var + bn.eps)
    t = bn.running_mean - bn.bias * sigma / bn.weight
    pos, neg = bn.weight > 0, bn.weight < 0
    torch.testing.assert_close(clamp.lo.flatten()[pos], t[pos].detach())
    torch.testing.assert_close(clamp.hi.flatten()[neg], t[neg].detach())
    assert torch.all(torch.isinf(clamp.lo.flatten()[neg]))
    assert torch.all(torch.isinf(clamp.hi.flatten()[pos]))
    conv = canon.paths[1].transitions[0].conv.weight
    want = model.paths[1].transitions[0].conv.weight * (bn.weight / sigma).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(conv, want.detach())


# ----------------------------------------------------------------------------------------
# single-layer rules against dense matrices
# ----------------------------------------------------------------------------------------
def _linear_matrix(fn, in_shape):
    """M (N_in, N_out) with fn(v) = v @ M for flattened single samples, from one-hots."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=DT).reshape((n,) + tuple(in_shape))
    return fn(eye).reshape(n, -1)


def _conv_reference(x, w, R, stride, padding, mode, rule, low=0.0, high=1.0):
    out = torch.zeros_like(x)
    pad6 = (padding,) * 6
    fmode = "replicate" if mode == "replicate" else "constant"
    P = _linear_matrix(lambda v: F.pad(v, pad6, mode=fmode) if padding else v, x.shape[1:])
    xp_shape = (x.shape[1],) + tuple(n + 2 * padding for n in x.shape[2:])
    Wm = _linear_matrix(lambda v: F.conv3d(v, w, stride=stride), xp_shape)
    for b in range(x.shape[0]):
        xp = x[b].reshape(-1) @ P
        Z = xp[:, None] * Wm
        if rule == "a1b0":
            Zr = Z.clamp(min=0)
        else:
            Zr = Z - low * Wm.clamp(min=0) - high * Wm.clamp(max=0)
        den = Zr.sum(0)
        ratio = torch.where(den != 0, R[b].reshape(-1) / torch.where(den != 0, den, 1.0), 0.0)
        out[b] = (P @ (Zr * ratio).sum(1)).reshape(x.shape[1:])
    # the references reproduce the convolution itself
    y = F.conv3d(F.pad(x, pad6, mode=fmode) if padding else x, w, stride=stride)
    torch.testing.assert_close((x[0].reshape(-1) @ P) @ Wm, y[0].reshape(-1))
    return out


# (in channels, out channels, kernel, stride, padding, mode): covers every way the engine
# computes the adjoint (1x1 matrix product, shifted sums, flipped conv, conv_transpose)
CONV_CASES = [(2, 3, 3, 1, 1, "zeros"), (2, 3, 3, 1, 1, "replicate"),
              (3, 2, 3, 1, 1, "replicate"), (3, 2, 3, 1, 0, "zeros"),
              (2, 3, 3, 2, 1, "zeros"), (2, 3, 3, 2, 1, "replicate"),
              (3, 4, 1, 1, 0, "zeros"), (1, 4, 3, 1, 1, "replicate")]


@pytest.mark.parametrize("cin,cout,k,stride,padding,mode", CONV_CASES)
def test_alpha1beta0_matches_dense_reference(cin, cout, k, stride, padding, mode):
    g = _gen(10)
    x = torch.randn((2, cin, 5, 4, 6), generator=g, dtype=DT)
    x[1, :, :2] = 0.0
    w = torch.randn((cout, cin, k, k, k), generator=g, dtype=DT)
    out_sp = [(n + 2 * padding - k) // stride + 1 for n in x.shape[2:]]
    R = torch.randn((2, cout, *out_sp), generator=g, dtype=DT)
    got = lrp.alpha1beta0_conv(x, w, R, stride=stride, padding=padding, padding_mode=mode)
    want = _conv_reference(x, w, R, stride, padding, mode, "a1b0")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # non-negative input: the same through the engine's shortcut
    got = lrp.alpha1beta0_conv(x.abs(), w, R, stride=stride, padding=padding,
                               padding_mode=mode)
    torch.testing.assert_close(got, _conv_reference(x.abs(), w, R, stride, padding, mode,
                                                    "a1b0"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cin,cout,k,stride,padding,mode", CONV_CASES)
def test_zb_matches_dense_reference(cin, cout, k, stride, padding, mode):
    g = _gen(11)
    x = torch.rand((2, cin, 5, 4, 6), generator=g, dtype=DT)
    x[0, 0, 0] = 0.0
    x[1, 0, -1] = 1.0
    w = torch.randn((cout, cin, k, k, k), generator=g, dtype=DT)
    out_sp = [(n + 2 * padding - k) // stride + 1 for n in x.shape[2:]]
    R = torch.rand((2, cout, *out_sp), generator=g, dtype=DT)
    got = lrp.zb_conv(x, w, R, stride=stride, padding=padding, padding_mode=mode)
    want = _conv_reference(x, w, R, stride, padding, mode, "zb")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got = lrp.zb_conv(x, w, R, stride=stride, padding=padding, padding_mode=mode,
                      low=-0.5, high=2.0)
    want = _conv_reference(x, w, R, stride, padding, mode, "zb", low=-0.5, high=2.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if mode == "replicate" or padding == 0:   # nothing is lost on padded positions
        torch.testing.assert_close(got.sum(dim=(1, 2, 3, 4)), R.sum(dim=(1, 2, 3, 4)),
                                   rtol=1e-10, atol=0)


def test_conv_rules_zero_denominator_gives_zero():
    x = torch.rand((1, 2, 4, 4, 4), generator=_gen(12), dtype=DT)
    w = -torch.rand((1, 2, 3, 3, 3), generator=_gen(13), dtype=DT)   # all products < 0
    R = torch.ones((1, 1, 4, 4, 4), dtype=DT)
    got = lrp.alpha1beta0_conv(x, w, R, padding=1, padding_mode="replicate")
    assert torch.all(got == 0)
    got = lrp.zb_conv(torch.zeros_like(x), -w, R, padding=1, padding_mode="replicate")
    assert torch.all(got == 0)                   # x = low everywhere, weights positive


def test_epsilon_linear():
    g = _gen(14)
    x = torch.randn((3, 5), generator=g, dtype=DT)
    x[2] = 0.0
    w = torch.randn((4, 5), generator=g, dtype=DT)
    R = torch.randn((3, 4), generator=g, dtype=DT)
    for eps in (lrp.EPSILON, 0.3):
        z = x @ w.t()
        den = z + eps * torch.where(z >= 0, 1.0, -1.0).to(DT)
        want = torch.einsum("bi,ji,bj->bi", x, w, R / den)
        torch.testing.assert_close(lrp.epsilon_linear(x, w, R, eps=eps), want, rtol=1e-12,
                                   atol=0)
    got = lrp.epsilon_linear(x, w, R)
    assert torch.all(got[2] == 0) and torch.isfinite(got).all()
    torch.testing.assert_close(got[:2].sum(1), R[:2].sum(1), rtol=1e-6, atol=0)
    assert lrp.EPSILON == 1e-8


@pytest.mark.parametrize("k,s", [(2, 2), (2, 1), (3, 2)])
def test_avgpool_proportional(k, s):
    g = _gen(15)
    x = 0.1 + torch.rand((2, 2, 5, 6, 5), generator=g, dtype=DT)
    x[0, 1, :3, :3, :3] = 0.0                    # windows of zeros: no NaN, no relevance
    out_sp = [(n - k) // s + 1 for n in x.shape[2:]]
    R = torch.randn((2, 2, *out_sp), generator=g, dtype=DT)
    want = torch.zeros_like(x)
    for b, c, i, j, l in itertools.product(range(2), range(2), *map(range, out_sp)):
        win = (b, c, slice(i * s, i * s + k), slice(j * s, j * s + k), slice(l * s, l * s + k))
        tot = x[win].sum()
        if tot != 0:
            want[win] += x[win] / tot * R[b, c, i, j, l]
    got = lrp.avgpool(x, R, k, s)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert torch.all(got[0, 1, :2, :2, :2] == 0)


def test_maxpool_to_winner_and_ties():
    g = _gen(16)
    x = torch.randn((2, 3, 5, 6, 7), generator=g, dtype=DT)
    x[1, 2, :3, :3, :3] = 0.25                   # ties: torch's choice decides
    R = torch.randn((2, 3, 3, 3, 4), generator=g, dtype=DT)
    _, idx = F.max_pool3d(x, 3, 2, 1, return_indices=True)
    want = torch.zeros((2, 3, 5 * 6 * 7), dtype=DT)
    for b, c in itertools.product(range(2), range(3)):
        for i, r in zip(idx[b, c].flatten().tolist(), R[b, c].flatten().tolist()):
            want[b, c, i] += r
    got = lrp.maxpool(x, R, 3, 2, padding=1)
    torch.testing.assert_close(got, want.reshape(x.shape), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.sum(), R.sum())


def test_product_rules():
    s = torch.tensor([0.6, -0.2, 0.0, 0.0, 3.0], dtype=DT)
    g = torch.tensor([0.2, 0.6, 0.5, 0.0, -1.0], dtype=DT)
    R = torch.tensor([1.0, -2.0, 3.0, 4.0, 2.0], dtype=DT)
    rs, rg = lrp.product(s, g, R, "proposed")
    torch.testing.assert_close(rs, torch.tensor([0.75, -0.5, 0.0, 0.0, 1.5], dtype=DT))
    torch.testing.assert_close(rg, torch.tensor([0.25, -1.5, 3.0, 0.0, 0.5], dtype=DT))
    both = (s.abs() + g.abs()) > 0
    torch.testing.assert_close((rs + rg)[both], R[both], rtol=1e-14, atol=0)
    rs, rg = lrp.product(s, g, R, "lrp-all")
    assert torch.equal(rs, R) and torch.all(rg == 0)
    with pytest.raises(ValueError):
        lrp.product(s, g, R, "z-plus")
    assert lrp.PRODUCT_RULES == ("proposed", "lrp-all")


# ----------------------------------------------------------------------------------------
# conservation and starts
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", lrp.PRODUCT_RULES)
def test_conservation_from_logit(conservative, rule):
    model, x, age, det = conservative
    r = lrp.explain(model, x, age, start="logit", rule=rule)
    assert r.voxels.shape == x.shape and r.age.shape == (2,) and r.start.shape == (2,)
    torch.testing.assert_close(r.start, det["logit"], rtol=1e-12, atol=0)
    total = r.voxels.sum(dim=(1, 2, 3, 4)) + r.age
    torch.testing.assert_close(total, det["logit"], rtol=1e-6, atol=0)
    assert torch.all(r.voxels.abs().sum(dim=(2, 3, 4)) > 0)
    # age keeps its epsilon share of the classifier: z_age c_age / f * f
    c = model.classifier.weight[0]
    want_age = det["z"][:, -1] * c[-1] / (det["z"] @ c + 1e-8 * torch.sign(det["z"] @ c)) \
        * det["logit"]
    torch.testing.assert_close(r.age, want_age, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rule", lrp.PRODUCT_RULES)
def test_conservation_from_attention_weight(conservative, rule):
    model, x, age, det = conservative
    total = torch.zeros(2, dtype=DT)
    for l in range(L):
        r = lrp.explain(model, x, age, start=l, rule=rule)
        torch.testing.assert_close(r.start, det["a"][:, l], rtol=1e-12, atol=0)
        for other in set(range(L)) - {l}:
            assert torch.all(r.voxels[:, other] == 0)
        assert torch.all(r.age == 0)
        path_total = r.voxels[:, l].sum(dim=(1, 2, 3))
        torch.testing.assert_close(path_total, det["a"][:, l], rtol=1e-6, atol=0)
        total += path_total
    torch.testing.assert_close(total, torch.ones(2, dtype=DT), rtol=1e-6, atol=0)


@pytest.mark.parametrize("where", ["stem", "dense"])
def test_a_bn_with_zero_gamma_folded_into_its_conv_keeps_relevance(where):
    """A BN folded into the conv before it (the stem's; each dense layer's second) with
    gamma exactly 0 makes that channel a constant, relu(beta): a bias, not an input. Its
    relevance must not be lost (it used to be, about 6e-2 of a_l)."""
    x = _images(2, 7)
    age = _ages(2, 8)
    model = _conservative_model(21, x)
    with torch.no_grad():
        for path in model.paths:
            # (dense layers past the first block: there every other channel is alive,
            # so the constant is one input among live ones)
            bns = [path.stem.bn] if where == "stem" else \
                [layer.bn2 for block in path.blocks[1:] for layer in block.layers]
            if where == "stem":                    # its consumers let channel 0 through
                for mod in [*path.blocks[0].modules(), path.transitions[0].bn]:
                    if isinstance(mod, nn.BatchNorm3d):
                        mod.weight.abs_()
            for bn in bns:
                bn.weight.abs_()                   # the other channels stay alive
                bn.weight[0] = 0.0
                bn.bias[0] = 0.5                   # the constant channel is relu(0.5)
    det = _details(model, x, age)
    canon = lrp.canonize(model)
    with torch.no_grad():
        torch.testing.assert_close(canon(x, age), det["logit"], rtol=1e-9, atol=1e-12)
    r = lrp.explain(model, x, age, start="logit", rule="proposed")
    total = r.voxels.sum(dim=(1, 2, 3, 4)) + r.age
    torch.testing.assert_close(total, det["logit"], rtol=1e-6, atol=0)
    for l in range(L):
        r = lrp.explain(model, x, age, start=l, rule="lrp-all")
        torch.testing.assert_close(r.voxels[:, l].sum(dim=(1, 2, 3)), det["a"][:, l],
                                   rtol=1e-6, atol=0)


def test_conservation_record_equals_independent_sums(conservative):
    """scenario_maps' record: the start value, each contrast's voxel sum and age, from
    separate explain() calls summed here; conservative model -> errors below 1e-6."""
    model, x, age, det = conservative
    record = {}
    lrp.scenario_maps(model, x, age, scenarios=[1, 3, 6, 11], ig_steps=2, record=record)
    assert sorted(record) == [1, 3, 6]              # LRP scenarios only; 3 shares 1's walk
    assert record[3] == record[1]
    f = lrp.explain(model, x, age, start="logit", rule="lrp-all")
    rec = record[6]
    np.testing.assert_allclose(rec["start_value"], det["logit"].tolist(), rtol=1e-12)
    np.testing.assert_allclose(rec["voxel_sums"], f.voxels.sum(dim=(2, 3, 4)).tolist(),
                               rtol=1e-9)
    np.testing.assert_allclose(rec["age"], f.age.tolist(), rtol=1e-12)
    want = (f.voxels.sum(dim=(1, 2, 3, 4)) + f.age - det["logit"]).abs() / det["logit"].abs()
    np.testing.assert_allclose(rec["relative_error"], want.tolist(), rtol=1e-6, atol=1e-15)
    rec = record[1]
    starts = [lrp.explain(model, x, age, start=l, rule="proposed") for l in range(L)]
    np.testing.assert_allclose(rec["start_value"], det["a"].sum(1).tolist(), rtol=1e-12)
    np.testing.assert_allclose(rec["voxel_sums"], torch.stack(
        [starts[l].voxels[:, l].sum(dim=(1, 2, 3)) for l in range(L)], 1).tolist(), rtol=1e-9)
    assert rec["age"] == [0.0, 0.0]
    assert max(record[1]["relative_error"] + record[6]["relative_error"]) < 1e-6


def _hand_relevance_at_m(model, det, start, rule):
    """Relevance reaching m (B, L, hidden), written out with explicit loops
    (docs/method.md#64-where-relevance-starts)."""
    P = {k: v.detach().numpy() for k, v in model.state_dict().items()
         if k.startswith(("att_", "classifier"))}
    U, V, w, c = P["att_U.weight"], P["att_V.weight"], P["att_w.weight"][0], \
        P["classifier.weight"][0]
    m, s, g, a, z = (det[k].numpy() for k in ("m", "s", "g", "a", "z"))
    B, Lh, H = m.shape
    K = U.shape[0]

    def stab(v):
        return v + 1e-8 * (1.0 if v >= 0 else -1.0)

    def split(sig, gate, r):
        if rule == "lrp-all":
            return r, 0.0
        den = abs(sig) + abs(gate)
        return (abs(sig) / den * r, abs(gate) / den * r) if den > 0 else (0.0, 0.0)

    out = np.zeros((B, Lh, H))
    for b in range(B):
        r_e = np.zeros(Lh)
        if start == "logit":
            f0 = float(z[b] @ c)
            n = a[b] @ m[b]
            for k in range(H):
                r_nk = z[b, k] * c[k] / stab(f0) * det["logit"][b].item()
                for l in range(Lh):
                    r_sig, r_gate = split(m[b, l, k], a[b, l],
                                          a[b, l] * m[b, l, k] / stab(n[k]) * r_nk)
                    out[b, l, k] += r_sig
                    r_e[l] += r_gate
        else:
            r_e[start] = a[b, start]
        for l in range(Lh):
            u = s[b, l] * g[b, l]
            e0 = float(u @ w)
            for k in range(K):
                r_s, r_g = split(s[b, l, k], g[b, l, k], u[k] * w[k] / stab(e0) * r_e[l])
                zs, zg = float(m[b, l] @ U[k]), float(m[b, l] @ V[k])
                for j in range(H):
                    out[b, l, j] += m[b, l, j] * U[k, j] / stab(zs) * r_s
                    out[b, l, j] += m[b, l, j] * V[k, j] / stab(zg) * r_g
    return torch.from_numpy(out)


@pytest.mark.parametrize("start,rule", [("logit", "proposed"), ("logit", "lrp-all"),
                                        (1, "proposed"), (1, "lrp-all")])
def test_attention_level_against_hand_arithmetic(generic, start, rule):
    """The voxel maps equal the path walk of the hand-computed relevance at m: checks the
    classifier / n / attention split, the product rules (LRP-all: the gates a_l and g get
    nothing) and that a walk is linear in the relevance at m."""
    model, x, age = generic
    canon = lrp.canonize(model)
    stores = {l: {} for l in range(L)}
    with torch.no_grad():
        det = canon(x, age, return_details=True, stores=stores)
    hand = _hand_relevance_at_m(model, det, start, rule)
    r = lrp.explain(model, x, age, start=start, rule=rule)
    for l in range(L):
        with torch.no_grad():
            walk = canon.paths[l].relevance(stores[l], hand[:, l])[:, 0]
        torch.testing.assert_close(r.voxels[:, l], walk, rtol=1e-8,
                                   atol=1e-10 * walk.abs().max().item())


def test_product_rules_give_different_maps(generic):
    model, x, age = generic
    p = lrp.explain(model, x, age, start=0, rule="proposed")
    a = lrp.explain(model, x, age, start=0, rule="lrp-all")
    assert (p.voxels - a.voxels).abs().max() > 1e-3 * a.voxels.abs().max()


# ----------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------
def _target(model, x, age, target):
    det = model(x, age, return_details=True)
    return det["logit"] if target == "logit" else det["a"][:, target]


def _grad(model, x, age, target):
    xg = x.clone().requires_grad_(True)
    return torch.autograd.grad(_target(model, xg, age, target).sum(), xg)[0]


@pytest.mark.parametrize("target", ["logit", 2])
def test_saliency(generic, target):
    model, x, age = generic
    got = lrp.saliency(model, x, age, target=target)
    torch.testing.assert_close(got, _grad(model, x, age, target).abs(), rtol=1e-10,
                               atol=1e-15)


@pytest.mark.parametrize("target", ["logit", 0])
def test_integrated_gradients(generic, target):
    model, x, age = generic
    ig = lrp.integrated_gradients(model, x, age, target=target, steps=6)
    want = sum(_grad(model, x * ((i + 0.5) / 6), age, target) for i in range(6)) * x / 6
    torch.testing.assert_close(ig, want, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lrp.integrated_gradients(model, x, age, target=target,
                                                        steps=6, chunk=4), ig,
                               rtol=1e-10, atol=1e-15)
    # completeness
    ig = lrp.integrated_gradients(model, x, age, target=target, steps=128)
    with torch.no_grad():
        delta = _target(model, x, age, target) - _target(model, 0 * x, age, target)
    assert delta.abs().min() > 1e-3
    torch.testing.assert_close(ig.sum(dim=(1, 2, 3, 4)), delta, rtol=2e-2,
                               atol=1e-3 * delta.abs().max().item())


def test_baselines_leave_training_mode_alone():
    model = _generic_model(seed=8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, age = _images(1, 1), _ages(1, 2)
    lrp.saliency(model, x, age)
    lrp.explain(model, x, age)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------
def test_scenario_table():
    # the paper's twelve (Table I), then 13-20 beyond it (tests/test_lrp_beyond.py)
    assert sorted(lrp.SCENARIOS) == list(range(1, 21))
    want = {1: ("aw", "lrp", "proposed", "individual"), 2: ("aw", "lrp", "lrp-all", "individual"),
            3: ("aw", "lrp", "proposed", "combined"), 4: ("aw", "lrp", "lrp-all", "combined"),
            5: ("f", "lrp", "proposed", "individual"), 6: ("f", "lrp", "lrp-all", "individual"),
            7: ("f", "lrp", "proposed", "combined"), 8: ("f", "lrp", "lrp-all", "combined"),
            9: ("aw", "saliency", None, "individual"), 10: ("aw", "ig", None, "individual"),
            11: ("f", "saliency", None, "individual"), 12: ("f", "ig", None, "individual")}
    for n, sc in lrp.SCENARIOS.items():
        assert sc.number == n
        if n <= 12:
            assert (sc.start, sc.method, sc.rule, sc.kind) == want[n]
        assert sc.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        lrp.SCENARIOS[1].number = 5                       # frozen


def test_scenario_maps(generic):
    model, x, age = generic
    maps = lrp.scenario_maps(model, x, age, ig_steps=3)
    assert sorted(maps) == list(range(1, 13))
    for n, t in maps.items():
        shape = x.shape if lrp.SCENARIOS[n].kind == "individual" else (2,) + SHAPE
        assert t.shape == shape and torch.isfinite(t).all(), n
    # LRP scenarios against the independent reference (tests/lrp_reference.py)
    reference = ReferenceLRP(model, x, age).scenarios(range(1, 9))
    for n in range(1, 9):
        torch.testing.assert_close(maps[n], reference[n], rtol=1e-7, atol=1e-10,
                                   msg=f"scenario {n}")
    for comb, ind in ((3, 1), (4, 2), (7, 5), (8, 6)):
        torch.testing.assert_close(maps[comb], (maps[ind] * x).sum(dim=1), rtol=1e-12,
                                   atol=0)
    for l in range(L):
        torch.testing.assert_close(maps[9][:, l], lrp.saliency(model, x, age, l)[:, l])
        torch.testing.assert_close(maps[10][:, l],
                                   lrp.integrated_gradients(model, x, age, l, steps=3)[:, l])
    torch.testing.assert_close(maps[11], lrp.saliency(model, x, age))
    torch.testing.assert_close(maps[12], lrp.integrated_gradients(model, x, age, steps=3))
    assert not torch.allclose(maps[1], maps[2]) and not torch.allclose(maps[1], maps[5])
    calls = []
    sub = lrp.scenario_maps(model, x, age, scenarios=[7, 3], progress=calls.append)
    assert sorted(sub) == [3, 7] and calls
    torch.testing.assert_close(sub[3], maps[3], rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        lrp.scenario_maps(model, x, age, scenarios=[21])


def test_batch_equals_single_samples(generic):
    model, _, _ = generic
    x, age = _images(3, 21), _ages(3, 22)
    batch = lrp.scenario_maps(model, x, age, scenarios=[1, 2, 5, 6, 9, 12], ig_steps=2)
    for i in range(3):
        one = lrp.scenario_maps(model, x[i:i + 1], age[i:i + 1],
                                scenarios=[1, 2, 5, 6, 9, 12], ig_steps=2)
        for n in one:
            torch.testing.assert_close(batch[n][i:i + 1], one[n], rtol=1e-9,
                                       atol=1e-12 * one[n].abs().max().item(), msg=str(n))
    r = lrp.explain(model, x, age, start="logit")
    r1 = lrp.explain(model, x[1:2], age[1:2], start="logit")
    torch.testing.assert_close(r.age[1:2], r1.age, rtol=1e-12, atol=0)


def test_float32_agrees_with_float64(generic):
    model, x, age = generic
    r64 = lrp.explain(model, x, age, start=2, rule="proposed").voxels
    r32 = lrp.explain(copy.deepcopy(model).float(), x.float(), age.float(), start=2).voxels
    assert r32.dtype == torch.float32
    err = (r32.double() - r64).abs().max() / r64.abs().max()
    assert err < 1e-3


def test_bad_arguments(generic):
    model, x, age = generic
    with pytest.raises(ValueError):
        lrp.explain(model, x, age, start=3)
    with pytest.raises(ValueError):
        lrp.explain(model, x, age, start="a")
    with pytest.raises(ValueError):
        lrp.explain(model, x, age, rule="zplus")
    with pytest.raises(ValueError):
        lrp.explain(model, x[:, :2], age)


def test_layout_knows_the_lrp_scenarios():
    """The workflow plans the conservation summary from layout.LRP_SCENARIOS (no torch)."""
    from gamer_mril.layout import LRP_SCENARIOS

    assert set(LRP_SCENARIOS) == {n for n, sc in lrp.SCENARIOS.items() if sc.method == "lrp"}
