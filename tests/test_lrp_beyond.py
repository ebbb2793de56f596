"""The scenarios beyond the paper, 13-20 (docs/method.md#68-beyond-the-paper-scenarios-13-to-20;
float64, tiny networks as ``tests/test_lrp_oracle.py`` builds them).

* the gamma rule on a tiny linear layer and a tiny conv against numbers worked out by hand
  from ``c_ij = z_ij + gamma (z_ij)^+`` (positive output) and ``z_ij + gamma (z_ij)^-``
  (negative output), ``R_i = sum_j c_ij / sum_i' c_i'j R_j``; gamma = 0 is LRP-0 (the
  epsilon rule without stabiliser) and ``x * d(z . s)/dx`` by autograd;
* the flat rule by hand on a tiny conv (uniform over each receptive field, with zero and
  replicate padding), blind to inputs and weights;
* the gamma and gamma flat-first composites conserve relevance through the whole
  canonized network (the tolerance of the existing conservation tests);
* SmoothGrad equals the mean of per-copy autograd gradients computed here from the noise
  the docs define, and tends to the plain gradient as the noise goes to 0;
* integrated gradients from a reference: completeness (sum = f(x) - f(x'), error
  shrinking with the steps) for f(x) and every a_l; the smoothed reference equals
  scipy's Gaussian inside the brain;
* the paper's twelve maps are the same to the bit whether or not 13-20 are computed, and
  match the independent reference (tests/lrp_reference.py);
* explain_session writes 13-20 with their settings; SmoothGrad's noise is a function of
  the config's seed and the session.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from gamer_mril import lrp
from lrp_reference import ReferenceLRP
from test_lrp import _grad, _target
from test_lrp_composite import _signed_bias_free_model
from test_lrp_oracle import DT, SHAPE, L, _conservative_model, _gen, _generic_model, _images

ALL = list(range(1, 21))


#: one torch thread for the module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _brain_images(batch, seed):
    """Random images inside an ellipsoid, 0 outside (as the network's inputs are)."""
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=DT) for n in SHAPE],
                                      indexing="ij"))
    brain = ((grid ** 2).sum(0) < 0.7).to(DT)
    return _images(batch, seed) * brain


@pytest.fixture(scope="module")
def generic():
    """Non-trivial BN, head FC scaled up so that the attention weights react to the
    images by more than a few thousandths (as tests/test_lrp.py's generic network)."""
    model = _generic_model(seed=23, hidden=6, attention_dim=4)
    with torch.no_grad():
        for path in model.paths:
            path.head_fc.weight *= 10.0
    return model, _brain_images(2, 24), torch.tensor([37.0, 52.0], dtype=DT)


def t(values):
    return torch.tensor(values, dtype=DT)


# ----------------------------------------------------------------------------------------
# the gamma rule
# ----------------------------------------------------------------------------------------
def test_gamma_linear_by_hand():
    x = t([[1.0, 2.0], [1.0, -1.0]])          # sample 2 has a negative input
    w = t([[2.0, 1.0], [1.0, -1.0], [2.0, -1.0]])
    r = t([[6.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
    got = lrp.gamma_linear(x, w, r, gamma=0.5)
    # sample 1, x = (1, 2):
    #   j=0: z_i = (2, 2), z = 4 > 0: c = (2 + 1, 2 + 1) = (3, 3), den 6: R = 6 -> (3, 3)
    #   j=1: z_i = (1, -2), z = -1 < 0: c = (1, -2 - 1) = (1, -3), den -2: R = 2 -> (-1, 3)
    #   j=2: z_i = (2, -2), z = 0: no share
    # sample 2, x = (1, -1):
    #   j=0: z_i = (2, -1), z = 1 > 0: c = (2 + 1, -1) = (3, -1), den 2: R = 1 -> (1.5, -0.5)
    #   j=1: z_i = (1, 1), z = 2 > 0: c = (1.5, 1.5), den 3: R = 1 -> (0.5, 0.5)
    #   j=2: z_i = (2, 1), z = 3 > 0: c = (3, 1.5), den 4.5: R = 1 -> (2/3, 1/3)
    want = t([[3.0 - 1.0, 3.0 + 3.0], [1.5 + 0.5 + 2 / 3, -0.5 + 0.5 + 1 / 3]])
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    # inputs >= 0, positive outputs: x_i (w_ij + gamma w_ij^+) / sum_i ... R_j
    x, w, r = t([[1.0, 2.0]]), t([[2.0, 1.0], [-1.0, 3.0]]), t([[6.0, 2.0]])
    c = x.T * (w.T + 0.5 * w.T.clamp(min=0))          # (in, out)
    torch.testing.assert_close(lrp.gamma_linear(x, w, r, gamma=0.5),
                               (c / c.sum(0) * r).sum(1, keepdim=True).T, rtol=1e-14,
                               atol=0)


def test_gamma_conv_by_hand():
    """One input row (1, 2, 3), two kernels of width 2, stride 1, no padding; gamma 1/4."""
    x = t([1.0, 2.0, 3.0]).reshape(1, 1, 1, 1, 3)
    w = t([[-1.0, 2.0], [1.0, -1.0]]).reshape(2, 1, 1, 1, 2)
    r = t([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 1, 1, 2)
    got = lrp.gamma_conv(x, w, r, gamma=0.25).flatten()
    want = torch.zeros(3, dtype=DT)
    # kernel a at 0: z_i = (-1, 4), z = 3: c = (-1, 5), den 4, R = 1
    want[0:2] += t([-1.0, 5.0]) / 4 * 1
    # kernel a at 1: z_i = (-2, 6), z = 4: c = (-2, 7.5), den 5.5, R = 2
    want[1:3] += t([-2.0, 7.5]) / 5.5 * 2
    # kernel b at 0: z_i = (1, -2), z = -1: c = (1, -2.5), den -1.5, R = 3
    want[0:2] += t([1.0, -2.5]) / -1.5 * 3
    # kernel b at 1: z_i = (2, -3), z = -1: c = (2, -3.75), den -1.75, R = -1
    want[1:3] += t([2.0, -3.75]) / -1.75 * -1
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    assert float(got.sum()) == pytest.approx(float(r.sum()), abs=1e-12)


@pytest.mark.parametrize("padding_mode", ["zeros", "replicate"])
def test_gamma_zero_is_lrp0(padding_mode):
    g = _gen(31)
    x = torch.randn((2, 3, 5, 6, 4), generator=g, dtype=DT)
    w = torch.randn((4, 3, 3, 3, 3), generator=g, dtype=DT)
    r = torch.randn((2, 4, 5, 6, 4), generator=g, dtype=DT)
    conv = type("C", (), dict(weight=w, bias=None, stride=(1, 1, 1), padding=(1, 1, 1),
                              padding_mode=padding_mode))
    lrp0 = lrp.Epsilon(0.0).prepare(conv, x)[1](r)
    torch.testing.assert_close(lrp.Gamma(0.0).prepare(conv, x)[1](r), lrp0, rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(
        lrp.gamma_conv(x, w, r, 0.0, padding=1, padding_mode=padding_mode), lrp0,
        rtol=1e-10, atol=1e-12)
    # LRP-0 is x * d(z . s)/dx with s = R / z held fixed
    xg = x.clone().requires_grad_(True)
    xp = nn.functional.pad(xg, (1,) * 6, mode="replicate") if padding_mode == "replicate" \
        else xg
    z = nn.functional.conv3d(xp, w, padding=0 if padding_mode == "replicate" else 1)
    grad, = torch.autograd.grad((z * (r / z.detach())).sum(), xg)
    torch.testing.assert_close(lrp0, x * grad, rtol=1e-9, atol=1e-12)
    xl, wl, rl = x[:, :, 0, 0, 0], w[:, :, 1, 1, 1], r[:, :, 0, 0, 0]
    torch.testing.assert_close(lrp.gamma_linear(xl, wl, rl, 0.0),
                               lrp.epsilon_linear(xl, wl, rl, eps=0.0), rtol=1e-12, atol=1e-14)


def test_gamma_nonnegative_hint_and_large_gamma():
    """The non-negative input's shortcut equals the general rule; a large gamma tends to
    alpha1-beta0 on neurons with a positive output."""
    g = _gen(32)
    x = torch.rand((2, 3, 5, 6, 4), generator=g, dtype=DT)
    w = torch.randn((4, 3, 3, 3, 3), generator=g, dtype=DT)
    conv = type("C", (), dict(weight=w, bias=torch.randn(4, generator=g, dtype=DT),
                              stride=(1, 1, 1), padding=(1, 1, 1), padding_mode="zeros"))
    y1, fast = lrp.Gamma(0.7).prepare(conv, x, nonnegative=True)
    y2, slow = lrp.Gamma(0.7).prepare(conv, x, nonnegative=False)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y1, nn.functional.conv3d(x, w, conv.bias, padding=1))
    r = torch.randn(y1.shape, generator=g, dtype=DT)
    torch.testing.assert_close(fast(r), slow(r), rtol=1e-10, atol=1e-12)
    z = nn.functional.conv3d(x, w, padding=1)
    r_pos = r * (z > 0)
    torch.testing.assert_close(lrp.gamma_conv(x, w, r_pos, 1e8, padding=1),
                               lrp.alpha1beta0_conv(x, w, r_pos, padding=1), rtol=1e-6,
                               atol=1e-9)
    with pytest.raises(ValueError):
        lrp.Gamma(-0.1)


# ----------------------------------------------------------------------------------------
# the flat rule
# ----------------------------------------------------------------------------------------
def test_flat_conv_by_hand():
    x = t([1.0, 2.0, 3.0]).reshape(1, 1, 1, 1, 3)
    w = t([[-1.0, 2.0], [1.0, -1.0]]).reshape(2, 1, 1, 1, 2)
    r = t([[1.0, 2.0], [3.0, -1.0]]).reshape(1, 2, 1, 1, 2)
    # every output splits evenly over its 2 inputs
    want = t([(1 + 3) / 2, (1 + 3) / 2 + (2 - 1) / 2, (2 - 1) / 2])
    torch.testing.assert_close(lrp.flat_conv(x, w, r).flatten(), want, rtol=1e-14, atol=0)
    # blind to the inputs and the weights
    torch.testing.assert_close(lrp.flat_conv(-5 * x, 3 * w, r), lrp.flat_conv(x, w, r),
                               rtol=0, atol=0)
    # kernel 3, padding 1: zero padding counts the real inputs only (2, 3, 2); replicate
    # padding counts 3 everywhere and gives the padded copies' share to the border voxel
    w3 = torch.ones((1, 1, 1, 1, 3), dtype=DT)
    r3 = t([3.0, 6.0, 12.0]).reshape(1, 1, 1, 1, 3)
    zeros = lrp.flat_conv(x, w3, r3, padding=(0, 0, 1)).flatten()
    torch.testing.assert_close(zeros, t([3 / 2 + 6 / 3, 3 / 2 + 6 / 3 + 12 / 2,
                                         6 / 3 + 12 / 2]), rtol=1e-14, atol=0)
    rep = lrp.flat_conv(x, w3, r3, padding=(0, 0, 1), padding_mode="replicate").flatten()
    torch.testing.assert_close(rep, t([2 * 3 / 3 + 6 / 3, 3 / 3 + 6 / 3 + 12 / 3,
                                       6 / 3 + 2 * 12 / 3]), rtol=1e-14, atol=0)


# ----------------------------------------------------------------------------------------
# the composites through the whole network
# ----------------------------------------------------------------------------------------
def test_gamma_composites_are_named_and_differ_from_the_papers():
    assert lrp.GAMMA == lrp.Composite(first_conv=lrp.ZB(), conv=lrp.Gamma(0.25),
                                      linear=lrp.Epsilon(), max_pool=lrp.MaxPool(),
                                      avg_pool=lrp.AvgPool(), product=lrp.ProposedProduct())
    assert lrp.GAMMA_FLAT == lrp.Composite(first_conv=lrp.Flat(), conv=lrp.Gamma(0.25),
                                           linear=lrp.Epsilon(), max_pool=lrp.MaxPool(),
                                           avg_pool=lrp.AvgPool(),
                                           product=lrp.ProposedProduct())
    assert lrp.gamma_composite(0.5).conv == lrp.Gamma(0.5)


def _errors(model, x, age, rule):
    out = []
    r = lrp.explain(model, x, age, start="logit", rule=rule)
    out.append((r.voxels.sum(dim=(1, 2, 3, 4)) + r.age - r.start).abs() / r.start.abs())
    for l in range(L):
        r = lrp.explain(model, x, age, start=l, rule=rule)
        out.append((r.voxels[:, l].sum(dim=(1, 2, 3)) - r.start).abs() / r.start.abs())
    return torch.stack(out)


@pytest.mark.parametrize("rule", ["gamma", "gamma-flat"])
def test_gamma_composites_conserve(rule):
    """Biases zero (the docs' condition): the voxels plus age give f(x) back, each
    contrast's voxels its a_l, to 1e-6 as tests/test_lrp.py's conservation tests; on
    signed conv weights too (the gamma rule's denominator has the output's sign, so
    unlike alpha1-beta0 it drops nothing but exact zeros)."""
    composite = lrp.GAMMA if rule == "gamma" else lrp.GAMMA_FLAT
    x, age = _images(2, 71), torch.tensor([28.0, 57.0], dtype=DT)
    model = _conservative_model(9, x, hidden=6, attention_dim=4)
    assert _errors(model, x, age, composite).max() < 1e-6
    signed = _signed_bias_free_model(9, x)
    assert _errors(signed, x, age, composite).max() < 1e-6
    assert _errors(signed, x, age, lrp.PAPER).max() > 1e-2     # alpha1-beta0 drops some
    ours = lrp.explain(signed, x, age, rule=composite).voxels
    paper = lrp.explain(signed, x, age, rule=lrp.PAPER).voxels
    assert (ours - paper).abs().max() > 0.1 * paper.abs().max()


# ----------------------------------------------------------------------------------------
# SmoothGrad
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["logit", 1])
def test_smoothgrad_is_the_mean_of_per_copy_gradients(generic, target):
    model, x, age = generic
    got = lrp.smoothgrad(model, x, age, target=target, samples=5, noise=0.2, seed=7)
    gen = torch.Generator().manual_seed(7)           # the noise as the docs define it
    want = sum(_grad(model, x + 0.2 * torch.randn(x.shape, generator=gen, dtype=DT), age,
                     target) for _ in range(5)) / 5
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(lrp.smoothgrad(model, x, age, target=target, samples=5,
                                              noise=0.2, seed=7, chunk=2), got,
                               rtol=1e-10, atol=1e-15)
    assert (got < 0).any() and (got > 0).any()                 # signed
    other = lrp.smoothgrad(model, x, age, target=target, samples=5, noise=0.2, seed=8)
    assert not torch.allclose(other, got)


def test_smoothgrad_tends_to_the_gradient(generic):
    """Where the network is differentiable at x: images without a zero background (on a
    constant background max pooling has ties, and any noise moves their winners)."""
    model, _, age = generic
    x = _images(2, 25)
    plain = _grad(model, x, age, "logit")
    errors = [(lrp.smoothgrad(model, x, age, samples=3, noise=s, seed=1) - plain).abs().max()
              for s in (1e-2, 1e-4, 1e-7)]
    assert errors[2] < 1e-6 * plain.abs().max()
    assert errors[2] < errors[0]


# ----------------------------------------------------------------------------------------
# integrated gradients from a reference
# ----------------------------------------------------------------------------------------
def test_smoothed_reference_is_the_gaussian_inside_the_brain():
    x = _brain_images(2, 41)
    x[:, 1] *= torch.rand(x[:, 1].shape, generator=_gen(42), dtype=DT) > 0.3  # zeros in MWF
    sigma = (1.5, 2.0, 2.5)
    got = lrp.smoothed_reference(x, sigma).numpy()
    for b in range(2):
        m = (x[b] > 0).any(dim=0).numpy().astype(float)
        den = ndimage.gaussian_filter(m, sigma, mode="constant", truncate=4.0)
        for c in range(L):
            num = ndimage.gaussian_filter(x[b, c].numpy() * m, sigma, mode="constant",
                                          truncate=4.0)
            want = np.where(m > 0, num / np.where(m > 0, den, 1.0), 0.0)
            np.testing.assert_allclose(got[b, c], want, rtol=1e-10, atol=1e-13)
    assert (got[x.numpy().max(axis=1, keepdims=True).repeat(L, 1) == 0] == 0).all()


@pytest.mark.parametrize("target", ["logit", 0, 1, 2])
def test_integrated_gradients_from_a_reference_are_complete(generic, target):
    model, x, age = generic
    ref = lrp.smoothed_reference(x, 2.0)
    with torch.no_grad():
        delta = _target(model, x, age, target) - _target(model, ref, age, target)
    assert delta.abs().min() > 1e-4
    errors = []
    for steps in (4, 16, 64):
        ig = lrp.integrated_gradients(model, x, age, target=target, steps=steps,
                                      reference=ref)
        errors.append((ig.sum(dim=(1, 2, 3, 4)) - delta).abs().max().item())
    assert errors[2] < errors[0]
    assert errors[2] < 2e-2 * delta.abs().max().item()
    # the midpoint rule on the straight path from the reference
    ig = lrp.integrated_gradients(model, x, age, target=target, steps=3, reference=ref)
    want = sum(_grad(model, ref + (i + 0.5) / 3 * (x - ref), age, target)
               for i in range(3)) * (x - ref) / 3
    torch.testing.assert_close(ig, want, rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------------------
# the scenarios
# ----------------------------------------------------------------------------------------
def test_the_table_goes_on_after_the_twelve():
    assert sorted(lrp.SCENARIOS) == ALL
    want = {13: ("aw", "smoothgrad", None, None), 14: ("f", "smoothgrad", None, None),
            15: ("aw", "lrp", "gamma", None), 16: ("f", "lrp", "gamma", None),
            17: ("aw", "lrp", "gamma-flat", None), 18: ("f", "lrp", "gamma-flat", None),
            19: ("aw", "ig", None, "smoothed"), 20: ("f", "ig", None, "smoothed")}
    for n, (start, method, composite, reference) in want.items():
        sc = lrp.SCENARIOS[n]
        assert (sc.start, sc.method, sc.composite, sc.reference, sc.kind) == \
            (start, method, composite, reference, "individual"), n
        assert sc.rule == ("proposed" if method == "lrp" else None)
    assert len({sc.name for sc in lrp.SCENARIOS.values()}) == 20
    assert all(lrp.SCENARIOS[n].composite == "paper" for n in range(1, 9))
    assert [lrp.SCENARIOS[n].reference for n in (10, 12)] == ["zero", "zero"]


def test_scenario_maps_beyond_the_paper(generic):
    model, x, age = generic
    opts = dict(ig_steps=3, smoothgrad_samples=4, smoothgrad_noise=0.1, smoothgrad_seed=5,
                gamma=0.4, ig_reference_sigma=1.5)
    maps = lrp.scenario_maps(model, x, age, scenarios=ALL, **opts)
    twelve = lrp.scenario_maps(model, x, age, ig_steps=3)
    assert sorted(twelve) == list(range(1, 13))
    for n in range(1, 13):                           # the same to the bit
        torch.testing.assert_close(maps[n], twelve[n], rtol=0, atol=0, msg=str(n))
    reference = ReferenceLRP(model, x, age).scenarios(range(1, 9))
    for n in range(1, 9):
        torch.testing.assert_close(maps[n], reference[n], rtol=1e-7, atol=1e-10, msg=str(n))
    for n in range(13, 21):
        assert maps[n].shape == x.shape and torch.isfinite(maps[n]).all(), n
    ref = lrp.smoothed_reference(x, 1.5)
    composites = {15: lrp.gamma_composite(0.4), 17: lrp.gamma_composite(0.4, flat_first=True)}
    for l in range(L):
        torch.testing.assert_close(maps[13][:, l], lrp.smoothgrad(
            model, x, age, l, samples=4, noise=0.1, seed=5)[:, l], rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(maps[19][:, l], lrp.integrated_gradients(
            model, x, age, l, steps=3, reference=ref)[:, l], rtol=1e-10, atol=1e-15)
        for n, comp in composites.items():
            torch.testing.assert_close(maps[n][:, l], lrp.explain(
                model, x, age, start=l, rule=comp).voxels[:, l], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(maps[14], lrp.smoothgrad(model, x, age, samples=4, noise=0.1,
                                                        seed=5), rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(maps[20], lrp.integrated_gradients(
        model, x, age, steps=3, reference=ref), rtol=1e-10, atol=1e-15)
    for n, comp in ((16, composites[15]), (18, composites[17])):
        torch.testing.assert_close(maps[n], lrp.explain(model, x, age, rule=comp).voxels,
                                   rtol=1e-10, atol=1e-14)
    assert not torch.allclose(maps[15], maps[17]) and not torch.allclose(maps[15], maps[1])
    record = {}
    lrp.scenario_maps(model, x, age, scenarios=[16, 17], record=record, **opts)
    assert sorted(record) == [16, 17]
    with pytest.raises(ValueError, match="ig_reference_sigma"):
        lrp.scenario_maps(model, x, age, scenarios=[19])


# ----------------------------------------------------------------------------------------
# one session on disk
# ----------------------------------------------------------------------------------------
def _session(tmp_path):
    import nibabel as nib
    from safetensors.torch import save_file

    model = _generic_model(seed=51, hidden=6, attention_dim=4).float()
    fold = tmp_path / "models" / "fold-0"
    fold.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(fold / "model.safetensors"))
    (fold / "model.json").write_text(json.dumps(dict(config=model.config, epoch=1,
                                                     val_auc=0.5)))
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    x = _brain_images(1, 52)[0].numpy().astype(np.float32)
    maps = []
    for c in range(L):
        maps.append(tmp_path / f"map{c}.nii.gz")
        nib.save(nib.Nifti1Image(x[c], affine), str(maps[-1]))
    box = tmp_path / "box.json"
    box.write_text(json.dumps({"CropBox": {"start": [1, 0, 2], "shape": list(SHAPE)},
                               "FullShape": [17, 18, 20], "FullAffine": affine.tolist()}))
    return maps, box, fold


def test_explain_session_writes_the_new_scenarios(tmp_path):
    from gamer_mril import explain
    from gamer_mril.scenario_stack import load_stack

    maps, box, fold = _session(tmp_path)
    kw = dict(ig_steps=2, smoothgrad_samples=3, smoothgrad_noise=0.1, smoothgrad_seed=4,
              gamma=0.3, ig_reference_sigma_mm=6.0, device="cpu", log=lambda *_: None)

    def run(name, session, scenarios=ALL, **over):
        crop, ndi = tmp_path / f"{name}_crop.nii.gz", tmp_path / f"{name}_ndi.nii.gz"
        facts = explain.explain_session(maps, 40.0, fold, box, crop, ndi, scenarios,
                                        **{**kw, **over}, subject="01", session=session)
        return facts, load_stack(crop)[0]

    facts, stack = run("a", "1")
    assert sorted(stack) == ALL
    assert facts["ig_reference_sigma_voxels"] == [3.0, 3.0, 2.0]
    assert (facts["gamma"], facts["smoothgrad_samples"], facts["smoothgrad_seed"]) == (0.3, 3, 4)
    for n in range(13, 21):
        sc = facts["scenarios"][n]
        assert (sc["method"], sc["composite"], sc["reference"]) == \
            (lrp.SCENARIOS[n].method, lrp.SCENARIOS[n].composite, lrp.SCENARIOS[n].reference)
        assert ("conservation" in sc) == (n in (15, 16, 17, 18))
        assert (stack[n] < 0).any() and (stack[n] > 0).any(), n         # signed on disk
    _, again = run("b", "1", scenarios=[13, 14])
    _, other = run("c", "2", scenarios=[13, 14])
    _, seeded = run("d", "1", scenarios=[13, 14], smoothgrad_seed=5)
    for n in (13, 14):
        assert np.array_equal(again[n], stack[n])
        assert not np.allclose(other[n], stack[n]) and not np.allclose(seeded[n], stack[n])
    s = explain.smoothgrad_session_seed
    assert s(0, "01", "1") == s(0, "sub-01", "ses-1") != s(0, "01", "2") != s(1, "01", "1")
