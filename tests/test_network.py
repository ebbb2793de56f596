"""Tests of gamer_mril.network: shapes, path independence, age scaling, attention by hand."""

import numpy as np
import pytest
import torch

from gamer_mril import CONTRASTS
from gamer_mril.network import (AGE_SCALE, build_model, count_parameters,
                                feature_spatial_shape)

SMALL = (16, 16, 20)


def _inputs(shape, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, len(CONTRASTS)) + tuple(shape), generator=gen)
    age = 20.0 + 50.0 * torch.rand(batch, generator=gen)
    return x, age


@pytest.fixture(scope="module")
def model():
    net = build_model(SMALL, seed=0).eval()
    # Fresh BN layers are the identity in eval mode; give them non-trivial statistics
    # and affine parameters so the checks below exercise them.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                c = mod.num_features
                mod.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                mod.weight.copy_(0.5 + torch.rand(c, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return net


@pytest.mark.parametrize("shape", [(16, 16, 20), (24, 24, 28), (48, 48, 56)])
def test_output_shapes(shape):
    net = build_model(shape, seed=0).eval()
    x, age = _inputs(shape, batch=2)
    with torch.no_grad():
        d = net(x, age, return_details=True)
        logit = net(x, age)
    expected = {"logit": (2,), "p": (2,), "m": (2, 3, 32), "s": (2, 3, 16),
                "g": (2, 3, 16), "e": (2, 3), "a": (2, 3), "n": (2, 32), "z": (2, 33)}
    for key, want in expected.items():
        assert tuple(d[key].shape) == want, key
    assert torch.equal(logit, d["logit"])
    assert torch.allclose(d["p"], torch.sigmoid(d["logit"]))


def test_attention_weights_sum_to_one(model):
    x, age = _inputs(SMALL, batch=4)
    with torch.no_grad():
        a = model(x, age, return_details=True)["a"]
    assert torch.all(a > 0)
    assert torch.allclose(a.sum(dim=1), torch.ones(4), atol=1e-6)


@pytest.mark.parametrize("changed", range(len(CONTRASTS)))
def test_paths_are_independent(model, changed):
    x, age = _inputs(SMALL)
    x2 = x.clone()
    x2[:, changed] = torch.rand_like(x2[:, changed])
    with torch.no_grad():
        m1 = model(x, age, return_details=True)["m"]
        m2 = model(x2, age, return_details=True)["m"]
    for l in range(len(CONTRASTS)):
        if l == changed:
            assert not torch.allclose(m1[:, l], m2[:, l]), "the changed path did not react"
        else:
            assert torch.equal(m1[:, l], m2[:, l]), f"path {l} reacted to contrast {changed}"


def test_paths_have_separate_weights(model):
    convs = [p.stem.conv.weight for p in model.paths]
    assert len({w.data_ptr() for w in convs}) == len(convs)
    assert not torch.equal(convs[0], convs[1])
    # The same image in all three channels still gives three different hidden vectors.
    x, age = _inputs(SMALL, batch=1)
    x = x[:, :1].repeat(1, 3, 1, 1, 1)
    with torch.no_grad():
        m = model(x, age, return_details=True)["m"][0]
    assert not torch.allclose(m[0], m[1]) and not torch.allclose(m[1], m[2])


def test_age_enters_divided_by_100(model):
    x, age = _inputs(SMALL)
    delta = torch.tensor([10.0, -25.0, 3.5])
    with torch.no_grad():
        d1 = model(x, age, return_details=True)
        d2 = model(x, age + delta, return_details=True)
    w_age = model.classifier.weight[0, -1].item()
    assert w_age != 0.0
    np.testing.assert_allclose((d2["logit"] - d1["logit"]).numpy(),
                               w_age * delta.numpy() / 100.0, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d1["z"][:, -1].numpy(), age.numpy() / 100.0, rtol=1e-6)
    assert torch.equal(d1["n"], d2["n"])            # age touches only the classifier
    assert AGE_SCALE == 100.0


def test_attention_and_classifier_by_hand(model):
    x, age = _inputs(SMALL, batch=4)
    with torch.no_grad():
        d = model(x, age, return_details=True)
    t = {k: v.double().numpy() for k, v in d.items()}
    P = {k: v.detach().double().numpy() for k, v in model.state_dict().items()
         if k.startswith(("att_", "classifier"))}
    m = t["m"]                                                     # (B, 3, 32)
    s = np.tanh(m @ P["att_U.weight"].T + P["att_U.bias"])
    g = 1.0 / (1.0 + np.exp(-(m @ P["att_V.weight"].T + P["att_V.bias"])))
    e = (s * g) @ P["att_w.weight"][0] + P["att_w.bias"][0]
    a = np.exp(e - e.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    n = np.einsum("bl,blk->bk", a, m)
    z = np.concatenate([n, age.double().numpy()[:, None] / 100.0], axis=1)
    logit = z @ P["classifier.weight"][0] + P["classifier.bias"][0]
    for key, value in dict(s=s, g=g, e=e, a=a, n=n, z=z, logit=logit).items():
        np.testing.assert_allclose(t[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_forward_is_the_composition_of_named_modules(model):
    """The LRP engine replays a path from its named submodules; check that this works."""
    x, age = _inputs(SMALL, batch=2)
    with torch.no_grad():
        m = model(x, age, return_details=True)["m"]
        for l, path in enumerate(model.paths):
            h = x[:, l:l + 1]
            h = path.stem.pool(path.stem.relu(path.stem.bn(path.stem.conv(h))))
            for i, block in enumerate(path.blocks):
                for layer in block.layers:
                    y = layer.relu1(layer.bn1(h))
                    y = layer.relu2(layer.bn2(layer.conv1(y)))
                    h = torch.cat([h, layer.conv2(y)], dim=1)
                if i < 3:
                    tr = path.transitions[i]
                    h = tr.pool(tr.conv(tr.relu(tr.bn(h))))
            assert tuple(h.shape[1:]) == path.feature_shape
            h = path.head_fc(torch.flatten(path.head_relu(path.head_bn(h)), 1))
            torch.testing.assert_close(h, m[:, l], rtol=0, atol=0)


def test_named_layout():
    net = build_model(SMALL, seed=0)
    names = dict(net.named_modules())
    for name in ["paths.0.stem.conv", "paths.0.stem.bn", "paths.0.stem.pool",
                 "paths.2.blocks.3.layers.1.bn1", "paths.2.blocks.3.layers.1.conv2",
                 "paths.1.transitions.2.conv", "paths.1.transitions.2.pool",
                 "paths.0.head_bn", "paths.0.head_fc", "att_U", "att_V", "att_w",
                 "classifier"]:
        assert name in names, name
    assert len(net.paths) == 3 and len(net.paths[0].blocks) == 4
    assert len(net.paths[0].transitions) == 3
    assert all(len(b.layers) == 2 for b in net.paths[0].blocks)
    layer = net.paths[0].blocks[0].layers[0]
    assert layer.conv1.kernel_size == (1, 1, 1) and layer.conv1.out_channels == 16
    assert layer.conv2.kernel_size == (3, 3, 3) and layer.conv2.out_channels == 4
    assert layer.conv2.padding_mode == "replicate"
    stem = net.paths[0].stem
    assert (stem.conv.in_channels, stem.conv.out_channels) == (1, 16)
    assert stem.pool.kernel_size == 3 and stem.pool.stride == 2 and stem.pool.padding == 1


def _expected_parameter_count(spatial):
    """Parameters of the architecture counted by hand (convs without bias)."""
    k3 = 27
    per_path = k3 * 16 + 2 * 16                                  # stem conv + BN
    for c in [16, 20, 12, 16, 10, 14, 9, 13]:                     # dense layer inputs
        per_path += 2 * c + c * 16 + 2 * 16 + 16 * k3 * 4
    for c_in, c_out in [(24, 12), (20, 10), (18, 9)]:             # transitions
        per_path += 2 * c_in + c_in * c_out
    per_path += 2 * 17 + 17 * int(np.prod(spatial)) * 32 + 32     # head BN + FC
    attention = 2 * (32 * 16 + 16) + (16 + 1)
    return 3 * per_path + attention + (33 + 1)


def test_parameter_count_full_size():
    net = build_model((96, 96, 112), seed=0)          # construct only, no forward
    n = count_parameters(net)
    print(f"\nGAMER-MRIL parameters at input (96, 96, 112): {n}")
    assert net.paths[0].feature_shape == (17, 6, 6, 7)
    assert n == _expected_parameter_count((6, 6, 7))


def test_parameter_count_small():
    assert count_parameters(build_model(SMALL)) == _expected_parameter_count((1, 1, 1))


def test_feature_shape_and_too_small_inputs():
    assert feature_spatial_shape((96, 96, 112)) == (6, 6, 7)
    assert feature_spatial_shape((24, 24, 28)) == (1, 1, 1)
    assert feature_spatial_shape((15, 15, 15)) == (1, 1, 1)
    with pytest.raises(ValueError, match="too small"):
        build_model((14, 16, 16))
    with pytest.raises(ValueError, match="3 positive integers"):
        build_model((16, 16))


def test_wrong_input_shapes_raise(model):
    x, age = _inputs((16, 16, 24), batch=2)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x, age)
    x, age = _inputs(SMALL, batch=2)
    with pytest.raises(ValueError, match="age must have shape"):
        model(x, age[:1])
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :2], age)


def test_deterministic_from_seed():
    a = build_model(SMALL, seed=3).state_dict()
    b = build_model(SMALL, seed=3).state_dict()
    c = build_model(SMALL, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["paths.0.stem.conv.weight"], c["paths.0.stem.conv.weight"])
    torch.manual_seed(7)
    d = build_model(SMALL).state_dict()
    torch.manual_seed(7)
    e = build_model(SMALL).state_dict()
    assert all(torch.equal(d[k], e[k]) for k in d)
    # With a seed, torch's global random state is left alone.
    torch.manual_seed(11)
    build_model(SMALL, seed=0)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))


def test_training_step_reaches_every_parameter():
    net = build_model(SMALL, seed=0).train()
    x, age = _inputs(SMALL, batch=4)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        net(x, age), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    loss.backward()
    # The score bias shifts all three e_l equally, which the softmax ignores: its
    # gradient is zero up to rounding. Every other parameter must receive a gradient.
    assert abs(net.att_w.bias.grad.item()) < 1e-6
    missing = [name for name, p in net.named_parameters()
               if name != "att_w.bias" and (p.grad is None or not torch.any(p.grad != 0))]
    assert not missing, missing


def test_config_rebuilds_same_architecture():
    net = build_model(SMALL, seed=0)
    again = build_model(**net.config)
    again.load_state_dict(net.state_dict())            # strict: same names and shapes
    assert again.config == net.config
