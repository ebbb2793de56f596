"""An independent reference LRP for GamerMRIL, written from docs/method.md section 6.

Written from the method description (docs/method.md 6.1-6.7, docs/lrp.md's conventions)
and the network layout (gamer_mril/network.py) without reading the engine
(gamer_mril/lrp.py), so that the tests in tests/test_lrp_reference.py compare two
computations that share no code and no reading of the method beyond the documents.

How it computes
---------------
* **Canonization** is done here, from 6.1, as plain tensors (weights, biases, clamp
  thresholds); the model is only read, never copied or changed. In eval mode a BN is
  ``a (x - mu) + beta`` with ``a = gamma / sigma``:

  - a BN right after a conv (stem, a dense layer's second) is folded into that conv;
  - every other BN opens a BN -> ReLU -> conv/FC chain, rewritten as the clamp
    ``max(x, t)`` (gamma > 0) or ``min(x, t)`` (gamma < 0), ``t = mu - beta sigma / gamma``,
    then the conv/FC with weights ``W diag(a)`` and a constant bias;
  - a constant channel (a chain BN with gamma = 0, or a folded BN with gamma = 0 whose
    ReLU output is the constant ``relu(beta)``) gets a zero weight column in the layer
    that reads it, its value moved into that layer's bias.

  :func:`forward` runs this canonized network (biases included) so a test can check it
  against the model; the relevance uses the same tensors with the biases left out.
* **Layer rules by the gradient trick** (as zennit does it, without zennit): for a linear
  map with a rule-specific modified output ``z_mod`` (epsilon: ``x w``, stabilised by
  ``eps sign(z)``, ``sign(0) = +1``; alpha1-beta0: ``x+ w+ + x- w-``; z^B with bounds
  ``l = 0``, ``h = 1``: ``x w - l w+ - h w-``), the input relevance is
  ``x * autograd.grad(z_mod, x, R / z_mod)`` (0 where ``z_mod = 0``), each term of
  ``z_mod`` with its own input (``x+``, ``x-``, the bound tensors). Replicate padding is
  part of the differentiated function, so relevance of a padded voxel lands, through the
  autograd backward of ``F.pad``, on the voxel it copies. Average pooling is the same
  trick on ``avg_pool3d``; max pooling is the plain gradient of ``max_pool3d`` (all of
  ``R`` to the winner torch picks); ReLU, clamp, tanh, sigmoid and softmax pass relevance
  unchanged; concatenation hands each part its slice.
* **Attention and classifier** (6.3, 6.4): the classifier by epsilon from the logit; each
  ``n_k`` over its terms ``a_l m_lk`` by epsilon; the product rule (proposed: shares
  ``|s| / (|s| + |g|)``, ``|g| / (|s| + |g|)``; LRP-all: all to the signal) for
  ``a_l * m_lk`` (signal ``m``) and ``s * g`` (signal ``s``); ``a_l`` to ``e_l`` unchanged;
  ``w``, ``U`` and ``V`` by epsilon. From the attention weight ``a_l`` relevance starts at
  ``e_l`` with the value ``a_l`` and goes down path ``l`` only.
* **Scenarios 1-8** (6.5, 6.7) from these maps; combined maps are ``sum_l R_l x_l``.

Nothing here builds a transposed convolution or an adjoint by hand: every backward pass is
torch's autograd of the modified forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-8
PAD = (1,) * 6          # the 3x3x3 convs: 1 voxel of replicate padding on every side


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
def _div0(num, den):
    """num / den, 0 where den == 0."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, 1.0, den))


def _stabilise(z):
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_outputs=grad_out, allow_unused=True)


def _pad(v):
    return F.pad(v, PAD, mode="replicate")


# ----------------------------------------------------------------------------------------
# layer rules, gradient trick
# ----------------------------------------------------------------------------------------
def rule_epsilon(x, w, R):
    """Epsilon rule for ``z = x w^T`` (bias ignored): x (N, in), w (out, in), R (N, out)."""
    with torch.enable_grad():
        xl = _leaf(x)
        z = xl @ w.t()
        (g,) = _grads(z, xl, R / _stabilise(z.detach()))
    return xl.detach() * g


def rule_alpha1beta0(x, w, R, padded):
    """Alpha1-beta0 for the conv ``conv3d(pad(x), w)`` (pad: replicate, 1) or ``conv3d(x, w)``."""
    fn = (lambda v, k: F.conv3d(_pad(v), k)) if padded else (lambda v, k: F.conv3d(v, k))
    with torch.enable_grad():
        xp, xn = _leaf(x.clamp(min=0)), _leaf(x.clamp(max=0))
        z = fn(xp, w.clamp(min=0)) + fn(xn, w.clamp(max=0))
        gp, gn = _grads(z, (xp, xn), _div0(R, z.detach()))
    return xp.detach() * gp + xn.detach() * gn


def rule_zb(x, w, R, low=0.0, high=1.0):
    """z^B with bounds low/high for ``conv3d(pad(x), w)``, replicate padding of x and bounds."""
    with torch.enable_grad():
        xl = _leaf(x)
        lo = _leaf(torch.full_like(x, low))
        hi = _leaf(torch.full_like(x, high))
        z = (F.conv3d(_pad(xl), w) - F.conv3d(_pad(lo), w.clamp(min=0))
             - F.conv3d(_pad(hi), w.clamp(max=0)))
        gx, gl, gh = _grads(z, (xl, lo, hi), _div0(R, z.detach()))
    return xl.detach() * gx + lo.detach() * gl + hi.detach() * gh


def rule_avgpool(x, R):
    """AvgPool3d(2, 2): in proportion to the pooled values."""
    with torch.enable_grad():
        xl = _leaf(x)
        y = F.avg_pool3d(xl, 2, 2)
        (g,) = _grads(y, xl, _div0(R, y.detach()))
    return xl.detach() * g


def rule_maxpool(x, R):
    """MaxPool3d(3, 2, 1): all of R to the winner (the gradient of max pooling)."""
    with torch.enable_grad():
        xl = _leaf(x)
        y = F.max_pool3d(xl, 3, 2, 1)
        (g,) = _grads(y, xl, R)
    return g


def rule_product(signal, gate, R, rule):
    """Relevance R of ``signal * gate`` -> (R_signal, R_gate)."""
    if rule == "lrp-all":
        return R.clone(), torch.zeros_like(R)
    if rule != "proposed":
        raise ValueError(rule)
    s, g = signal.abs(), gate.abs()
    return _div0(s * R, s + g), _div0(g * R, s + g)


# ----------------------------------------------------------------------------------------
# canonization (method.md 6.1), as tensors
# ----------------------------------------------------------------------------------------
def _bn(bn):
    """(gamma, beta, mu, sigma, a) of a BN in eval mode, detached."""
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    mu = bn.running_mean.detach()
    sigma = torch.sqrt(bn.running_var.detach() + bn.eps)
    return gamma, beta, mu, sigma, gamma / sigma


@dataclass
class Clamp:
    gamma: torch.Tensor      # sign decides max (gamma > 0), min (gamma < 0), identity (0)
    t: torch.Tensor

    def __call__(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        g, t = self.gamma.view(shape), self.t.view(shape)
        return torch.where(g > 0, torch.maximum(x, t),
                           torch.where(g < 0, torch.minimum(x, t), x))


def _chain(bn, weight, bias, const):
    """BN -> ReLU -> linear map ``weight`` (O, C, ...) (a 1x1x1 conv, or an FC viewed as
    (O, C, S)), input channels flagged in ``const`` (C,) with values (nan where not constant).

    Returns (clamp, w, b): clamp the input, then ``w`` (same shape as ``weight``) and the
    bias ``b`` (O,) reproduce ``weight . relu(bn(x)) + bias``."""
    gamma, beta, mu, sigma, a = _bn(bn)
    C = gamma.shape[0]
    W = weight.detach().reshape(weight.shape[0], C, -1)               # (O, C, S)
    b = torch.zeros(W.shape[0], dtype=W.dtype) if bias is None else bias.detach().clone()
    dead = (gamma == 0) | ~torch.isnan(const)
    # value of relu(bn(x)) for constant channels: relu(beta) if gamma = 0, else relu(bn(v))
    v = torch.where(torch.isnan(const), mu, const)
    cval = torch.relu(a * (v - mu) + beta)
    b = b + (W * torch.where(dead, cval, 0.0).view(1, C, 1)).sum(dim=(1, 2))
    safe_gamma = torch.where(gamma == 0, 1.0, gamma)
    t = torch.where(gamma == 0, 0.0, mu - beta * sigma / safe_gamma)
    scale = torch.where(dead, 0.0, a)
    Wc = W * scale.view(1, C, 1)
    b = b - (Wc * t.view(1, C, 1)).sum(dim=(1, 2))
    return Clamp(gamma, t), Wc.reshape(weight.shape), b


def _fold(conv_weight, bn):
    """Conv (no bias) followed by BN -> (w, b, const): const (O,) is relu(beta) for the
    channels whose gamma is 0 (nan elsewhere): after the ReLU they are that constant."""
    gamma, beta, mu, sigma, a = _bn(bn)
    w = conv_weight.detach() * a.view(-1, *(1,) * (conv_weight.ndim - 1))
    b = beta - a * mu
    const = torch.where(gamma == 0, torch.relu(beta), torch.full_like(beta, float("nan")))
    return w, b, const


def _drop_const_columns(weight, bias, const):
    """A conv reading constant channels: zero their columns, their share into the bias (a
    replicate-padded conv of a constant channel is that constant times the kernel sum)."""
    dead = ~torch.isnan(const)
    W = weight.detach()
    csum = W.sum(dim=(2, 3, 4))                                       # (O, C)
    b = torch.zeros(W.shape[0], dtype=W.dtype) if bias is None else bias.detach().clone()
    b = b + (csum * torch.where(dead, const, 0.0).view(1, -1)).sum(dim=1)
    return W * (~dead).to(W.dtype).view(1, -1, 1, 1, 1), b


class CanonPath:
    """One path, canonized: the tensors of every layer, in walk order."""

    def __init__(self, path):
        self.stem_w, self.stem_b, const = _fold(path.stem.conv.weight, path.stem.bn)
        # max pooling of a constant channel is the same constant
        self.blocks = []
        for i, block in enumerate(path.blocks):
            layers = []
            for layer in block.layers:
                clamp, w1, b1 = _chain(layer.bn1, layer.conv1.weight, None, const)
                w1, b1, const2 = _fold_after(w1, b1, layer.bn2)
                w2, b2 = _drop_const_columns(layer.conv2.weight, None, const2)
                layers.append(dict(clamp=clamp, w1=w1, b1=b1, w2=w2, b2=b2))
                growth = w2.shape[0]
                const = torch.cat([const, torch.full((growth,), float("nan"), dtype=const.dtype)])
            trans = None
            if i < len(path.transitions):
                tr = path.transitions[i]
                clamp, wt, bt = _chain(tr.bn, tr.conv.weight, None, const)
                trans = dict(clamp=clamp, w=wt, b=bt)
                const = torch.full((wt.shape[0],), float("nan"), dtype=const.dtype)
            self.blocks.append((layers, trans))
        self.head_clamp, self.head_w, self.head_b = _chain(
            path.head_bn, path.head_fc.weight, path.head_fc.bias,
            const)
        self.feature_shape = tuple(path.feature_shape)

    def forward(self, x0):
        """x0 (B, 1, D, H, W) -> (m (B, hidden), record of what the walk needs)."""
        rec = {"x0": x0}
        y = F.conv3d(_pad(x0), self.stem_w) + self.stem_b.view(1, -1, 1, 1, 1)
        r = torch.relu(y)
        rec["stem_relu"] = r
        h = F.max_pool3d(r, 3, 2, 1)
        rec["blocks"] = []
        for layers, trans in self.blocks:
            lrec = []
            for ly in layers:
                c1 = ly["clamp"](h)
                z1 = F.conv3d(c1, ly["w1"]) + ly["b1"].view(1, -1, 1, 1, 1)
                r2 = torch.relu(z1)
                new = F.conv3d(_pad(r2), ly["w2"]) + ly["b2"].view(1, -1, 1, 1, 1)
                lrec.append(dict(c1=c1, r2=r2, channels=h.shape[1]))
                h = torch.cat([h, new], dim=1)
            trec = None
            if trans is not None:
                c = trans["clamp"](h)
                q = F.conv3d(c, trans["w"]) + trans["b"].view(1, -1, 1, 1, 1)
                trec = dict(c=c, q=q)
                h = F.avg_pool3d(q, 2, 2)
            rec["blocks"].append((lrec, trec))
        c = self.head_clamp(h).flatten(start_dim=1)
        rec["head_in"] = c
        m = c @ self.head_w.t() + self.head_b
        return m, rec

    def relevance(self, rec, R_m):
        """Walk R_m (B, hidden) down the path -> voxel relevance (B, D, H, W)."""
        R = rule_epsilon(rec["head_in"], self.head_w, R_m)
        R = R.reshape((R.shape[0],) + self.feature_shape)          # clamp: unchanged
        for (layers, trans), (lrec, trec) in zip(reversed(self.blocks),
                                                 reversed(rec["blocks"])):
            if trans is not None:
                R = rule_avgpool(trec["q"], R)
                R = rule_alpha1beta0(trec["c"], trans["w"], R, padded=False)
            for ly, lr in zip(reversed(layers), reversed(lrec)):
                k = lr["channels"]
                R_old, R_new = R[:, :k], R[:, k:]
                R2 = rule_alpha1beta0(lr["r2"], ly["w2"], R_new, padded=True)
                R1 = rule_alpha1beta0(lr["c1"], ly["w1"], R2, padded=False)
                R = R_old + R1
        R = rule_maxpool(rec["stem_relu"], R)
        R = rule_zb(rec["x0"], self.stem_w, R)
        return R[:, 0]


def _fold_after(w, b, bn):
    """The chain conv ``w`` (O, C, 1, 1, 1) with bias ``b`` followed by a BN: fold it."""
    gamma, beta, mu, sigma, a = _bn(bn)
    w = w * a.view(-1, 1, 1, 1, 1)
    b = a * (b - mu) + beta
    const = torch.where(gamma == 0, torch.relu(beta), torch.full_like(beta, float("nan")))
    return w, b, const


# ----------------------------------------------------------------------------------------
# the whole network
# ----------------------------------------------------------------------------------------
@dataclass
class Reference:
    voxels: torch.Tensor     # (B, L, D, H, W)
    age: torch.Tensor        # (B,)
    start: torch.Tensor      # (B,)


class ReferenceLRP:
    """Canonize once, run the forward once; :meth:`explain` walks a start and a rule."""

    def __init__(self, model, x, age):
        self.model = model
        self.paths = [CanonPath(p) for p in model.paths]
        self.x = x.detach()
        self.age = age.detach()
        with torch.no_grad():
            ms, self.recs = [], []
            for l, cp in enumerate(self.paths):
                m, rec = cp.forward(self.x[:, l:l + 1])
                ms.append(m)
                self.recs.append(rec)
            self.m = torch.stack(ms, dim=1)                                  # (B, L, H)
            mdl = model
            self.s = torch.tanh(self.m @ mdl.att_U.weight.t() + mdl.att_U.bias)
            self.g = torch.sigmoid(self.m @ mdl.att_V.weight.t() + mdl.att_V.bias)
            self.u = self.s * self.g
            self.e = (self.u @ mdl.att_w.weight.t() + mdl.att_w.bias)[..., 0]  # (B, L)
            self.a = torch.softmax(self.e, dim=1)
            self.n = (self.a[..., None] * self.m).sum(dim=1)
            self.z = torch.cat([self.n, (self.age / 100.0)[:, None].to(self.n.dtype)], dim=1)
            self.logit = (self.z @ mdl.classifier.weight.t() + mdl.classifier.bias)[:, 0]

    def details(self):
        return dict(m=self.m, s=self.s, g=self.g, e=self.e, a=self.a, n=self.n, z=self.z,
                    logit=self.logit)

    # attention branch: R_e (B, L) -> R_m (B, L, H)
    def _attention(self, R_e, rule):
        B, L, H = self.m.shape
        K = self.u.shape[-1]
        mdl = self.model
        R_u = rule_epsilon(self.u.reshape(B * L, K), mdl.att_w.weight.detach(),
                           R_e.reshape(B * L, 1))
        R_s, R_g = rule_product(self.s.reshape(B * L, K), self.g.reshape(B * L, K), R_u, rule)
        mm = self.m.reshape(B * L, H)
        R_m = (rule_epsilon(mm, mdl.att_U.weight.detach(), R_s)
               + rule_epsilon(mm, mdl.att_V.weight.detach(), R_g))
        return R_m.reshape(B, L, H)

    def explain(self, start="logit", rule="proposed"):
        B, L, H = self.m.shape
        if start == "logit":
            R_z = rule_epsilon(self.z, self.model.classifier.weight.detach(),
                               self.logit[:, None])
            R_n, R_age = R_z[:, :H], R_z[:, H]
            # n_k = sum_l a_l m_lk: the terms share R_n by epsilon (gradient trick)
            with torch.enable_grad():
                ml = _leaf(self.m)
                n = (self.a[..., None] * ml).sum(dim=1)
                (gm,) = _grads(n, ml, R_n / _stabilise(n.detach()))
            R_terms = ml.detach() * gm                                       # (B, L, H)
            R_m, R_agate = rule_product(self.m, self.a[..., None].expand_as(self.m),
                                        R_terms, rule)
            R_e = R_agate.sum(dim=-1)                                        # softmax: unchanged
            R_m = R_m + self._attention(R_e, rule)
            walk = range(L)
            start_value = self.logit
        else:
            l = int(start)
            R_e = torch.zeros_like(self.e)
            R_e[:, l] = self.a[:, l]
            R_m = self._attention(R_e, rule)
            R_age = torch.zeros_like(self.logit)
            walk = [l]
            start_value = self.a[:, l]
        voxels = torch.zeros_like(self.x)
        for l in walk:
            voxels[:, l] = self.paths[l].relevance(self.recs[l], R_m[:, l])
        return Reference(voxels=voxels, age=R_age, start=start_value.clone())

    def scenarios(self, numbers=range(1, 9)):
        """The LRP scenarios of method.md 6.7: {n: tensor}."""
        L = self.x.shape[1]
        out = {}
        for n in numbers:
            rule = "proposed" if n % 2 == 1 else "lrp-all"
            if n in (1, 2, 3, 4):
                ind = torch.stack([self.explain(l, rule).voxels[:, l] for l in range(L)], dim=1)
            elif n in (5, 6, 7, 8):
                ind = self.explain("logit", rule).voxels
            else:
                raise ValueError(f"the reference has LRP scenarios 1-8 only, not {n}")
            out[n] = ind if n in (1, 2, 5, 6) else (ind * self.x).sum(dim=1)
        return out


def reference_explain(model, x, age, start="logit", rule="proposed"):
    return ReferenceLRP(model, x, age).explain(start, rule)


def reference_scenarios(model, x, age, scenarios=range(1, 9)):
    return ReferenceLRP(model, x, age).scenarios(scenarios)
