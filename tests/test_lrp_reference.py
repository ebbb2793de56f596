"""The relevance engine against an independent reference (tests/lrp_reference.py).

The reference is written from docs/method.md section 6 without reading gamer_mril/lrp.py:
its own canonization (tensors, not modules) and every layer rule by the gradient trick
(``x * autograd.grad(z_mod, x, R / z_mod)``), where the engine walks canonized modules
with its own rule implementations. Float64, tiny networks:

* ``biased``: 4 dense blocks, random BN statistics (shifts non-zero, about a third of the
  gammas negative), default (non-zero) Linear biases, head FC scaled up;
* ``constants``: 2 blocks of 3 dense layers, a 2 x 2 x 1 feature map (so the head's
  flatten order matters), the last channel of every BN with gamma = 0 (constant channels
  of 6.1, the stem's included), Linear biases zero, BN shifts non-zero;
* ``conservative``: every bias zero, conv weights after the stem non-negative: the
  reference must conserve relevance here (an invariant of the reference on its own).

Every network's stem pads by replication (network.py fixes it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from gamer_mril import lrp
from gamer_mril.network import build_model
from lrp_reference import (ReferenceLRP, rule_alpha1beta0, rule_avgpool, rule_epsilon,
                           rule_maxpool, rule_product, rule_zb)

DT = torch.float64
L = 3
RTOL, ATOL = 1e-7, 1e-10


#: one torch thread for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _set_bn(model, seed, zero_shift, zero_gamma):
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


def _build(name):
    if name == "biased":
        shape = (15, 16, 17)
        model = build_model(shape, seed=11, growth=2, stem_channels=4, hidden=6,
                            attention_dim=4).to(DT)
        _set_bn(model, 111, zero_shift=False, zero_gamma=False)
        with torch.no_grad():
            for path in model.paths:
                path.head_fc.weight *= 10.0
        x = torch.rand((2, L) + shape, generator=_gen(12), dtype=DT)
    elif name == "constants":
        shape = (6, 7, 9)                        # features 1 x 2 x 2 after one transition
        model = build_model(shape, seed=21, growth=2, stem_channels=3, n_blocks=2,
                            layers_per_block=3, bottleneck_factor=2, hidden=5,
                            attention_dim=3).to(DT)
        _set_bn(model, 121, zero_shift=False, zero_gamma=True)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, nn.Linear):
                    mod.bias.zero_()
            for path in model.paths:
                path.head_fc.weight *= 10.0
        x = torch.rand((2, L) + shape, generator=_gen(22), dtype=DT)
    elif name == "conservative":
        shape = (15, 16, 17)
        model = build_model(shape, seed=31, growth=2, stem_channels=4, hidden=6,
                            attention_dim=4).to(DT)
        _set_bn(model, 131, zero_shift=True, zero_gamma=False)
        x = torch.rand((2, L) + shape, generator=_gen(32), dtype=DT)
        with torch.no_grad():
            for mname, mod in model.named_modules():
                if isinstance(mod, nn.Conv3d) and not mname.endswith("stem.conv"):
                    mod.weight.abs_()
                if isinstance(mod, nn.Linear):
                    mod.bias.zero_()
            model.eval()
            m = model.encode(x)          # |m| ~ 1 and |e| ~ 1: epsilon far below every z
            for l, path in enumerate(model.paths):
                path.head_fc.weight /= m[:, l].abs().max()
            e = model(x, torch.zeros(2, dtype=DT), return_details=True)["e"]
            model.att_w.weight /= e.abs().max()
    else:
        raise KeyError(name)
    age = 20.0 + 50.0 * torch.rand(2, generator=_gen(7), dtype=DT)
    return model.eval(), x, age


NETS = ("biased", "constants", "conservative")
_CACHE = {}


def _net(name):
    if name not in _CACHE:
        model, x, age = _build(name)
        _CACHE[name] = (model, x, age, ReferenceLRP(model, x, age))
    return _CACHE[name]


# ----------------------------------------------------------------------------------------
# the reference on its own
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NETS)
def test_reference_canonization_reproduces_the_model(name):
    """The reference's canonized tensors (clamps, folded weights, moved constants, biases)
    give the model's forward: m, s, g, e, a, n, z and the logit."""
    model, x, age, ref = _net(name)
    with torch.no_grad():
        want = model(x, age, return_details=True)
    got = ref.details()
    for key, value in got.items():
        torch.testing.assert_close(value, want[key], rtol=1e-10, atol=1e-12, msg=key)
    if name == "constants":      # premise: constant channels exist and are read
        gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
        assert all(g[-1] == 0 for g in gammas)
        assert model.paths[0].head_fc.in_features == model.paths[0].feature_shape[0] * 4


def _np_conv_rule(x, w, R, pad, rule, low=0.0, high=1.0):
    """Explicit sums over the products of one conv (numpy, loops over output voxels)."""
    x, R, w = x.numpy()[0], R.numpy()[0], w.numpy()
    C, D, H, W = x.shape
    O, _, k, _, _ = w.shape
    if pad:
        idx = [np.clip(np.arange(-1, n + 1), 0, n - 1) for n in (D, H, W)]
    else:
        idx = [np.arange(n) for n in (D, H, W)]
    out = np.zeros_like(x)
    for o, i, j, q in itertools.product(range(O), *(range(len(ix) - k + 1) for ix in idx)):
        di, hi_, wi = idx[0][i:i + k], idx[1][j:j + k], idx[2][q:q + k]
        xs = x[:, di][:, :, hi_][:, :, :, wi]                  # (C, k, k, k), padded window
        if rule == "ab":
            zz = np.where(xs * w[o] > 0, xs * w[o], 0.0)
        else:
            zz = xs * w[o] - low * np.maximum(w[o], 0) - high * np.minimum(w[o], 0)
        den = zz.sum()
        share = zz / den * R[o, i, j, q] if den != 0 else np.zeros_like(zz)
        for c, a, b, d in itertools.product(range(C), range(k), range(k), range(k)):
            out[c, di[a], hi_[b], wi[d]] += share[c, a, b, d]
    return torch.from_numpy(out)[None]


def test_reference_layer_rules_are_the_documented_sums():
    """The gradient-trick rules against explicit sums of docs/lrp.md's formulas."""
    g = _gen(3)
    x = torch.randn((1, 2, 3, 3, 4), generator=g, dtype=DT)
    w = torch.randn((2, 2, 3, 3, 3), generator=g, dtype=DT)
    R = torch.randn((1, 2, 3, 3, 4), generator=g, dtype=DT)
    torch.testing.assert_close(rule_alpha1beta0(x, w, R, padded=True),
                               _np_conv_rule(x, w, R, True, "ab"), rtol=1e-12, atol=1e-12)
    R1 = torch.randn((1, 2, 1, 1, 2), generator=g, dtype=DT)
    torch.testing.assert_close(rule_alpha1beta0(x, w, R1, padded=False),
                               _np_conv_rule(x, w, R1, False, "ab"), rtol=1e-12, atol=1e-12)
    xb = torch.rand((1, 1, 3, 3, 4), generator=g, dtype=DT)
    wb = torch.randn((2, 1, 3, 3, 3), generator=g, dtype=DT)
    torch.testing.assert_close(rule_zb(xb, wb, R), _np_conv_rule(xb, wb, R, True, "zb"),
                               rtol=1e-12, atol=1e-12)
    # a zero alpha1-beta0 denominator drops the relevance
    xz = -x.abs()
    wz = w.abs()
    assert torch.equal(rule_alpha1beta0(xz, wz, R, padded=True), torch.zeros_like(x))
    # epsilon
    xe = torch.randn((3, 5), generator=g, dtype=DT)
    we = torch.randn((4, 5), generator=g, dtype=DT)
    Re = torch.randn((3, 4), generator=g, dtype=DT)
    zz = xe[:, None, :] * we[None]                                       # (N, out, in)
    z = zz.sum(-1)
    want = (zz / (z + 1e-8 * torch.where(z >= 0, 1.0, -1.0))[..., None] * Re[..., None]).sum(1)
    torch.testing.assert_close(rule_epsilon(xe, we, Re), want, rtol=1e-12, atol=1e-14)
    assert torch.equal(rule_epsilon(torch.zeros(1, 2, dtype=DT), we[:, :2], Re[:1]),
                       torch.zeros(1, 2, dtype=DT))
    # pooling
    xp = torch.randn((1, 1, 4, 2, 2), generator=g, dtype=DT)
    Rp = torch.randn((1, 1, 2, 1, 1), generator=g, dtype=DT)
    got = rule_avgpool(xp, Rp)
    for d in range(2):
        win = xp[0, 0, 2 * d:2 * d + 2]
        torch.testing.assert_close(got[0, 0, 2 * d:2 * d + 2], win / win.sum() * Rp[0, 0, d, 0, 0])
    xm = torch.randn((1, 1, 5, 1, 1), generator=g, dtype=DT)
    Rm = torch.randn((1, 1, 3, 1, 1), generator=g, dtype=DT)
    got = rule_maxpool(xm, Rm)
    want = torch.zeros_like(xm)
    v = xm[0, 0, :, 0, 0]
    for j in range(3):
        lo, hi = max(0, 2 * j - 1), min(5, 2 * j + 2)
        want[0, 0, lo + int(v[lo:hi].argmax()), 0, 0] += Rm[0, 0, j, 0, 0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # products
    s = torch.tensor([0.5, -2.0, 0.0], dtype=DT)
    gt = torch.tensor([0.25, 1.0, 0.0], dtype=DT)
    Rs, Rg = rule_product(s, gt, torch.tensor([3.0, 3.0, 1.0], dtype=DT), "proposed")
    torch.testing.assert_close(Rs, torch.tensor([2.0, 2.0, 0.0], dtype=DT))
    torch.testing.assert_close(Rg, torch.tensor([1.0, 1.0, 0.0], dtype=DT))


@pytest.mark.parametrize("rule", ["proposed", "lrp-all"])
def test_reference_conserves_relevance(rule):
    """Zero biases, non-negative conv weights after the stem: the reference's maps sum to
    the start (f(x) over voxels and age; a_l over contrast l's voxels)."""
    model, x, age, ref = _net("conservative")
    d = ref.details()
    for z in (d["e"], d["n"], d["logit"], d["m"] @ model.att_U.weight.t(),
              d["m"] @ model.att_V.weight.t()):
        assert z.abs().min() > 1e-3            # premise: epsilon negligible (< 1e-5 relative)
    r = ref.explain("logit", rule)
    total = r.voxels.sum(dim=(1, 2, 3, 4)) + r.age
    torch.testing.assert_close(total, d["logit"], rtol=1e-6, atol=0)
    per_path = r.voxels.sum(dim=(2, 3, 4))
    assert (per_path.abs() > 1e-3 * d["logit"].abs()[:, None]).all()  # every path takes part
    maps = []
    for l in range(L):
        r = ref.explain(l, rule)
        assert torch.equal(r.age, torch.zeros_like(r.age))
        others = [k for k in range(L) if k != l]
        assert torch.equal(r.voxels[:, others], torch.zeros_like(r.voxels[:, others]))
        torch.testing.assert_close(r.voxels[:, l].sum(dim=(1, 2, 3)), d["a"][:, l],
                                   rtol=1e-6, atol=0)
        maps.append(r.voxels[:, l])
    torch.testing.assert_close(torch.stack(maps, 1).sum(dim=(1, 2, 3, 4)),
                               torch.ones(2, dtype=DT), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------
# the engine against the reference
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["proposed", "lrp-all"])
@pytest.mark.parametrize("start", ["logit", 0, 1, 2])
@pytest.mark.parametrize("name", NETS)
def test_explain_equals_reference(name, start, rule):
    model, x, age, ref = _net(name)
    want = ref.explain(start, rule)
    got = lrp.explain(model, x, age, start=start, rule=rule)
    assert want.voxels.abs().max() > 0
    torch.testing.assert_close(got.start, want.start, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.age, want.age, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(got.voxels, want.voxels, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NETS)
def test_scenario_maps_equal_reference(name):
    model, x, age, ref = _net(name)
    got = lrp.scenario_maps(model, x, age, ig_steps=3)
    want = ref.scenarios(range(1, 9))
    for n in range(1, 9):
        assert want[n].abs().max() > 0
        torch.testing.assert_close(got[n], want[n], rtol=RTOL, atol=ATOL, msg=f"scenario {n}")
