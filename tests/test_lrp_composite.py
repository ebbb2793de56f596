"""Tests of the rule sets of the relevance engine (``gamer_mril.lrp.composite``, float64).

* the paper's composites reproduce ``explain(..., rule="proposed")`` and ``"lrp-all"``
  exactly, and a composite made by hand with the same rules does too;
* a composite that differs from the paper's only in the rule of the convs after the stem
  (epsilon instead of alpha1-beta0) changes the maps and still conserves relevance on
  networks with zero biases, built as ``tests/test_lrp_oracle.py`` builds its
  "conservative" networks (its helpers are imported; also with signed conv weights,
  where alpha1-beta0 drops relevance at zero denominators and epsilon does not);
* the named product rules give the hand-computed splits; the epsilon conv rule matches
  ``x * dz/dx`` computed by autograd; walks with different rules below ``m`` are refused
  in one pass.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gamer_mril import lrp
from gamer_mril.lrp.walk import _lrp, _prepare_inputs
from gamer_mril.network import build_model
# the oracle's networks (tests/ is on sys.path as pytest imports test modules by name)
from test_lrp_oracle import (ARCH, DT, SHAPE, L, _conservative_model, _gen, _generic_model,
                             _images, _randomize_bn)

#: The paper's rules but epsilon on every conv after the stem.
EPSILON_CONVS = dataclasses.replace(lrp.PAPER, conv=lrp.Epsilon())


#: one torch thread for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _signed_bias_free_model(seed, x):
    """The oracle's conservative network but with signed conv weights after the stem: all
    biases zero, random BN scales (some negative), head_fc rescaled so that max |m_l| over
    ``x`` is 1 for every path."""
    model = build_model(SHAPE, seed=seed, **ARCH, hidden=6, attention_dim=4).to(DT)
    _randomize_bn(model, seed + 100, zero_shift=True)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv3d)) and mod.bias is not None:
                mod.bias.zero_()
        model.eval()
        m = model.encode(x)
        for l, path in enumerate(model.paths):
            path.head_fc.weight /= m[:, l].abs().max()
    return model


@pytest.fixture(scope="module")
def generic():
    model = _generic_model(seed=13, hidden=6, attention_dim=4)
    return model, _images(2, 81), torch.tensor([44.0, 31.0], dtype=DT)


@pytest.fixture(scope="module")
def inputs():
    return _images(2, 71), torch.tensor([28.0, 57.0], dtype=DT)


def _relative_errors(model, x, age, rule):
    """|start - total relevance| / |start| of the walk from the logit and of each walk
    from an attention weight (voxels of that contrast), per sample: (1 + L, B)."""
    out = []
    r = lrp.explain(model, x, age, start="logit", rule=rule)
    out.append((r.voxels.sum(dim=(1, 2, 3, 4)) + r.age - r.start).abs() / r.start.abs())
    for l in range(L):
        r = lrp.explain(model, x, age, start=l, rule=rule)
        out.append((r.voxels[:, l].sum(dim=(1, 2, 3)) - r.start).abs() / r.start.abs())
    return torch.stack(out)


# ----------------------------------------------------------------------------------------
# the paper's composites are the rule names
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("start", ["logit", 0, 2])
def test_paper_composites_reproduce_the_rule_names(generic, start):
    model, x, age = generic
    by_hand = lrp.Composite(first_conv=lrp.ZB(low=0.0, high=1.0), conv=lrp.Alpha1Beta0(),
                            linear=lrp.Epsilon(1e-8), max_pool=lrp.MaxPool(),
                            avg_pool=lrp.AvgPool(), product=lrp.ProposedProduct())
    assert by_hand == lrp.PAPER == lrp.paper_composite("proposed")
    assert lrp.PAPER_LRP_ALL == lrp.paper_composite("lrp-all")
    assert lrp.PAPER_LRP_ALL == dataclasses.replace(lrp.PAPER, product=lrp.SignalTakesAll())
    for name, composite in (("proposed", lrp.PAPER), ("proposed", by_hand),
                            ("lrp-all", lrp.PAPER_LRP_ALL)):
        want = lrp.explain(model, x, age, start=start, rule=name)
        got = lrp.explain(model, x, age, start=start, rule=composite)
        for field in ("voxels", "age", "start"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field),
                                       rtol=0, atol=0)


def test_walks_differing_only_in_the_product_rule_share_one_pass(generic):
    model, x, age = generic
    canon = lrp.canonize(model)
    xc, agec = _prepare_inputs(canon, x, age)
    custom_all = dataclasses.replace(EPSILON_CONVS, product=lrp.SignalTakesAll())
    both = _lrp(canon, xc, agec, [("logit", EPSILON_CONVS), (1, custom_all)])
    for start, rule in (("logit", EPSILON_CONVS), (1, custom_all)):
        alone = lrp.explain(model, x, age, start=start, rule=rule)
        torch.testing.assert_close(both[(start, rule)].voxels, alone.voxels, rtol=0, atol=0)
    with pytest.raises(ValueError, match="below m"):
        _lrp(canon, xc, agec, [("logit", lrp.PAPER), ("logit", EPSILON_CONVS)])


# ----------------------------------------------------------------------------------------
# another rule set is another object
# ----------------------------------------------------------------------------------------
def test_a_custom_composite_changes_the_maps(generic):
    model, x, age = generic
    for start in ("logit", 1):
        paper = lrp.explain(model, x, age, start=start, rule="proposed").voxels
        custom = lrp.explain(model, x, age, start=start, rule=EPSILON_CONVS).voxels
        assert torch.isfinite(custom).all()
        assert (custom - paper).abs().max() > 0.1 * paper.abs().max()


def test_a_custom_composite_conserves_on_the_conservative_network(inputs):
    x, age = inputs
    model = _conservative_model(9, x, hidden=6, attention_dim=4)
    for product in (lrp.ProposedProduct(), lrp.SignalTakesAll()):
        rule = dataclasses.replace(EPSILON_CONVS, product=product)
        assert _relative_errors(model, x, age, rule).max() < 1e-6


def test_epsilon_convs_conserve_where_alpha1beta0_drops_relevance(inputs):
    """Zero biases but signed conv weights: alpha1-beta0 loses the relevance of neurons
    with no positive contribution, epsilon keeps it (up to the stabiliser)."""
    x, age = inputs
    model = _signed_bias_free_model(9, x)
    assert _relative_errors(model, x, age, EPSILON_CONVS).max() < 1e-4
    assert _relative_errors(model, x, age, lrp.PAPER).max() > 1e-2
    paper = lrp.explain(model, x, age, rule=lrp.PAPER).voxels
    custom = lrp.explain(model, x, age, rule=EPSILON_CONVS).voxels
    assert (custom - paper).abs().max() > 0.1 * paper.abs().max()


def test_a_composite_checks_its_rules():
    with pytest.raises(TypeError, match="conv"):
        dataclasses.replace(lrp.PAPER, conv=lrp.ProposedProduct())
    with pytest.raises(TypeError, match="product"):
        dataclasses.replace(lrp.PAPER, product=lrp.Epsilon())
    with pytest.raises(ValueError):
        lrp.paper_composite("z-plus")


# ----------------------------------------------------------------------------------------
# the rule classes on tiny examples
# ----------------------------------------------------------------------------------------
def test_named_product_rules_split_by_hand():
    s = torch.tensor([3.0, 0.0, -2.0], dtype=DT)
    g = torch.tensor([-1.0, 0.0, 2.0], dtype=DT)
    r = torch.tensor([2.0, 5.0, -4.0], dtype=DT)
    rs, rg = lrp.ProposedProduct().split(s, g, r)
    torch.testing.assert_close(rs, torch.tensor([1.5, 0.0, -2.0], dtype=DT), rtol=0, atol=0)
    torch.testing.assert_close(rg, torch.tensor([0.5, 0.0, -2.0], dtype=DT), rtol=0, atol=0)
    rs, rg = lrp.SignalTakesAll().split(s, g, r)
    torch.testing.assert_close(rs, r, rtol=0, atol=0)
    torch.testing.assert_close(rg, torch.zeros(3, dtype=DT), rtol=0, atol=0)
    assert lrp.PRODUCTS == {"proposed": lrp.ProposedProduct, "lrp-all": lrp.SignalTakesAll}
    for name, cls in lrp.PRODUCTS.items():
        for want, got in zip(cls().split(s, g, r), lrp.product(s, g, r, name)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("padding_mode", ["zeros", "replicate"])
def test_epsilon_conv_rule_is_input_times_gradient(padding_mode):
    """Epsilon on a conv: ``R_x = x * W^T (R / (z + eps sign z))``, i.e. ``x`` times the
    gradient of ``sum(z * s)`` with ``s`` held fixed (the padding's adjoint included)."""
    g = _gen(3)
    x = torch.randn((2, 3, 5, 6, 4), generator=g, dtype=DT)
    w = torch.randn((4, 3, 3, 3, 3), generator=g, dtype=DT)
    bias = torch.randn(4, generator=g, dtype=DT)
    conv = SimpleNamespace(weight=w, bias=bias, stride=(1, 1, 1), padding=(1, 1, 1),
                           padding_mode=padding_mode)
    y, backward = lrp.Epsilon(0.25).prepare(conv, x)
    xg = x.clone().requires_grad_(True)
    xp = F.pad(xg, (1,) * 6, mode="replicate") if padding_mode == "replicate" else xg
    z = F.conv3d(xp, w, padding=0 if padding_mode == "replicate" else 1)
    torch.testing.assert_close(y, z.detach() + bias.view(1, -1, 1, 1, 1))
    r = torch.randn(z.shape, generator=g, dtype=DT)
    zd = z.detach()
    s = r / (zd + 0.25 * torch.where(zd >= 0, 1.0, -1.0))
    grad, = torch.autograd.grad((z * s).sum(), xg)
    torch.testing.assert_close(backward(r), x * grad, rtol=1e-10, atol=1e-12)
