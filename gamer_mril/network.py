"""The GAMER-MRIL network: one 3D DenseNet path per contrast, gated attention, classifier.

Architecture (docs/method.md#4-network)
---------------------------------------
Each contrast (``qT1``, ``MWF``, ``NDI``, in that order) has its own path with its own
weights; a path sees one channel and returns a hidden vector ``m_l`` of 32 numbers::

    stem        Conv3d(1 -> 16, 3x3x3) -> BN -> ReLU -> MaxPool3d(3, stride 2, padding 1)
    block 1     dense layer x 2                       16 -> 24 channels
    transition  BN -> ReLU -> Conv 1x1x1 -> AvgPool3d(2, stride 2)   24 -> 12
    block 2     dense layer x 2                       12 -> 20
    transition                                        20 -> 10
    block 3     dense layer x 2                       10 -> 18
    transition                                        18 -> 9
    block 4     dense layer x 2                        9 -> 17
    head        BN -> ReLU -> flatten -> Linear(17 * d * h * w -> 32) = m_l

A dense layer is BN -> ReLU -> Conv 1x1x1 (to 4 x growth channels) -> BN -> ReLU ->
Conv 3x3x3 (to ``growth`` = 4 channels); its output is concatenated to its input.

The three hidden vectors meet in a gated attention whose weights are shared by the paths::

    s_l = tanh(U m_l),  g_l = sigmoid(V m_l)        U, V: Linear(32 -> 16)
    e_l = w^T (s_l * g_l)                           w:    Linear(16 -> 1)
    a   = softmax_l(e_l)
    n   = sum_l a_l m_l
    z   = concat(n, age / 100)
    f(x) = classifier(z)                            Linear(33 -> 1), the logit

Choices this module makes where the paper leaves them open
----------------------------------------------------------
(docs/method.md#8-decisions-the-paper-leaves-open)

* **Transition compression 0.5**: a transition's 1x1x1 conv maps ``c`` channels to
  ``floor(c * 0.5)`` (the DenseNet-BC value), hence 24 -> 12, 20 -> 10, 18 -> 9 above.
  ``compression`` is a parameter of :func:`build_model`.
* **Stem padding: 1 voxel, replicate** (``padding_mode="replicate"``), so the stem keeps the
  input's size and uses the same padding as the dense layers' 3x3x3 convs. Padded voxels
  are copies of border voxels, which keeps the LRP of the first conv (z^B rule, bounds 0
  and 1) conservative over the real voxels: relevance that lands on a padded voxel goes
  back to the voxel it copies (the backward of the padding), with no bound to choose for
  voxels that do not exist.
* **Convolutions have no bias** (as in DenseNet: each is followed by a BN, directly or
  after the concatenation), which leaves less for LRP to ignore. The Linear layers (head,
  attention and classifier) have biases.
* **Weights** use PyTorch's default initialisation, so a model is a function of torch's
  random state; :func:`build_model` takes a ``seed`` to make that explicit.

Layout for module-by-module walks (the LRP engine)
---------------------------------------------------
Every layer is a named submodule and every composite module's ``forward`` is exactly the
composition of its children in the order listed above, so a walker can replay the network
and keep every intermediate::

    paths[l].stem.{conv, bn, relu, pool}
    paths[l].blocks[i].layers[j].{bn1, relu1, conv1, bn2, relu2, conv2}   (then concat)
    paths[l].transitions[i].{bn, relu, conv, pool}     (after block i, i = 0, 1, 2)
    paths[l].{head_bn, head_relu, head_fc}             (flatten between relu and fc)
    att_U, att_V, att_w, classifier

:meth:`GamerMRIL.forward` with ``return_details=True`` returns the attention-level
intermediates (``m``, ``s``, ``g``, ``e``, ``a``, ``n``, ``z``, ``logit``, ``p``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from . import CONTRASTS

#: Ages (years) are divided by this before they join the combined representation.
AGE_SCALE = 100.0

#: Default input matrix, the crop of preprocessing step 5.
DEFAULT_INPUT_SHAPE = (96, 96, 112)


class Stem(nn.Module):
    """Conv3d(1 -> c, 3x3x3, replicate padding 1) -> BN -> ReLU -> MaxPool3d(3, 2, 1)."""

    def __init__(self, out_channels: int = 16):
        super().__init__()
        self.conv = nn.Conv3d(1, out_channels, kernel_size=3, padding=1,
                              padding_mode="replicate", bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class DenseLayer(nn.Module):
    """BN -> ReLU -> Conv 1x1x1 -> BN -> ReLU -> Conv 3x3x3; output concatenated to input."""

    def __init__(self, in_channels: int, growth: int, bottleneck_factor: int = 4):
        super().__init__()
        mid = bottleneck_factor * growth
        self.bn1 = nn.BatchNorm3d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv3d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv3d(mid, growth, kernel_size=3, padding=1,
                               padding_mode="replicate", bias=False)
        self.out_channels = in_channels + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))
        return torch.cat([x, new], dim=1)


class DenseBlock(nn.Module):
    """A sequence of dense layers; each adds ``growth`` channels."""

    def __init__(self, in_channels: int, n_layers: int, growth: int,
                 bottleneck_factor: int = 4):
        super().__init__()
        layers = []
        channels = in_channels
        for _ in range(n_layers):
            layer = DenseLayer(channels, growth, bottleneck_factor)
            layers.append(layer)
            channels = layer.out_channels
        self.layers = nn.ModuleList(layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Transition(nn.Module):
    """BN -> ReLU -> Conv 1x1x1 (channel compression) -> AvgPool3d(2, stride 2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn = nn.BatchNorm3d(in_channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool3d(kernel_size=2, stride=2)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


def feature_spatial_shape(input_shape: Sequence[int], n_transitions: int = 3) -> tuple:
    """Spatial shape of a path's last dense block output for a given input matrix.

    The stem conv keeps the size (padding 1), the max pool maps ``n`` to
    ``floor((n - 1) / 2) + 1`` and each transition's average pool to ``floor(n / 2)``.
    Raises ``ValueError`` if a dimension would shrink to zero.
    """
    shape = _check_shape(input_shape)
    out = []
    for n in shape:
        k = (n + 2 * 1 - 3) // 2 + 1          # MaxPool3d(3, stride 2, padding 1)
        for _ in range(n_transitions):
            k //= 2                            # AvgPool3d(2, stride 2)
        if k < 1:
            smallest = 2 ** (n_transitions + 1) - 1
            raise ValueError(
                f"input_shape {shape} is too small for the network: every dimension must "
                f"be at least {smallest} voxels so that {n_transitions} transitions leave "
                f"one voxel")
        out.append(k)
    return tuple(out)


class DensePath(nn.Module):
    """One contrast's encoder: stem, dense blocks with transitions between, head -> m_l."""

    def __init__(self, input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE, growth: int = 4,
                 stem_channels: int = 16, n_blocks: int = 4, layers_per_block: int = 2,
                 bottleneck_factor: int = 4, compression: float = 0.5, hidden: int = 32):
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        self.stem = Stem(stem_channels)
        blocks, transitions = [], []
        channels = stem_channels
        for i in range(n_blocks):
            block = DenseBlock(channels, layers_per_block, growth, bottleneck_factor)
            blocks.append(block)
            channels = block.out_channels
            if i < n_blocks - 1:
                transition = Transition(channels, max(1, int(math.floor(channels * compression))))
                transitions.append(transition)
                channels = transition.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        spatial = feature_spatial_shape(self.input_shape, n_transitions=n_blocks - 1)
        #: (channels, d, h, w) of the tensor that the head flattens.
        self.feature_shape = (channels,) + spatial
        self.head_bn = nn.BatchNorm3d(channels)
        self.head_relu = nn.ReLU()
        self.head_fc = nn.Linear(math.prod(self.feature_shape), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 1, D, H, W) -> hidden vector (B, hidden)."""
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.transitions):
                h = self.transitions[i](h)
        h = self.head_relu(self.head_bn(h))
        return self.head_fc(torch.flatten(h, start_dim=1))


class GamerMRIL(nn.Module):
    """Multi-path DenseNet with gated attention over contrasts and age-aware classifier.

    Use :func:`build_model` to construct one; ``model.config`` holds the arguments that
    rebuild the same architecture (e.g. when loading a checkpoint's weights).
    """

    def __init__(self, input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE, growth: int = 4,
                 stem_channels: int = 16, n_blocks: int = 4, layers_per_block: int = 2,
                 bottleneck_factor: int = 4, compression: float = 0.5, hidden: int = 32,
                 attention_dim: int = 16, contrasts: Sequence[str] = CONTRASTS):
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        for name, value in (("growth", growth), ("stem_channels", stem_channels),
                            ("n_blocks", n_blocks), ("layers_per_block", layers_per_block),
                            ("bottleneck_factor", bottleneck_factor), ("hidden", hidden),
                            ("attention_dim", attention_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        contrasts = tuple(contrasts)
        if len(contrasts) < 1 or len(set(contrasts)) != len(contrasts):
            raise ValueError(f"contrasts must be distinct names, got {contrasts}")
        self.input_shape = _check_shape(input_shape)
        self.contrasts = contrasts
        self.config = dict(input_shape=list(self.input_shape), growth=int(growth),
                           stem_channels=int(stem_channels), n_blocks=int(n_blocks),
                           layers_per_block=int(layers_per_block),
                           bottleneck_factor=int(bottleneck_factor),
                           compression=float(compression), hidden=int(hidden),
                           attention_dim=int(attention_dim), contrasts=list(contrasts))
        path_args = dict(input_shape=self.input_shape, growth=growth,
                         stem_channels=stem_channels, n_blocks=n_blocks,
                         layers_per_block=layers_per_block,
                         bottleneck_factor=bottleneck_factor, compression=compression,
                         hidden=hidden)
        self.paths = nn.ModuleList(DensePath(**path_args) for _ in contrasts)
        self.att_U = nn.Linear(hidden, attention_dim)   # signal branch: s = tanh(U m)
        self.att_V = nn.Linear(hidden, attention_dim)   # gate branch:   g = sigmoid(V m)
        self.att_w = nn.Linear(attention_dim, 1)        # score:         e = w^T (s * g)
        self.classifier = nn.Linear(hidden + 1, 1)      # logit from z = (n, age / 100)

    # The three stages of forward, exposed so that LRP can start from any of them.
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D, H, W) -> hidden vectors m (B, L, hidden), path l on channel l."""
        return torch.stack([path(x[:, l:l + 1]) for l, path in enumerate(self.paths)], dim=1)

    def attend(self, m: torch.Tensor) -> dict:
        """Gated attention over the L hidden vectors: returns s, g, e, a and n."""
        s = torch.tanh(self.att_U(m))                    # (B, L, K)
        g = torch.sigmoid(self.att_V(m))                 # (B, L, K)
        e = self.att_w(s * g).squeeze(-1)                # (B, L)
        a = torch.softmax(e, dim=1)                      # (B, L)
        n = (a.unsqueeze(-1) * m).sum(dim=1)             # (B, hidden)
        return {"s": s, "g": g, "e": e, "a": a, "n": n}

    def classify(self, n: torch.Tensor, age: torch.Tensor) -> tuple:
        """z = concat(n, age / 100) and the logit f(x) = classifier(z); returns (z, logit)."""
        z = torch.cat([n, (age.to(n.dtype) / AGE_SCALE).unsqueeze(1)], dim=1)
        return z, self.classifier(z).squeeze(-1)

    def forward(self, x: torch.Tensor, age: torch.Tensor, return_details: bool = False):
        """Logit f(x) of severe disability (B,), or a dict of intermediates.

        ``x``: (B, L, D, H, W) float, channels in ``self.contrasts`` order, (D, H, W) equal
        to ``input_shape``; ``age``: (B,) in years. With ``return_details=True`` the dict
        holds ``logit`` (B,), ``p`` = sigmoid(logit) (B,), ``m`` (B, L, hidden), ``s`` and
        ``g`` (B, L, attention_dim), ``e`` and ``a`` (B, L), ``n`` (B, hidden) and
        ``z`` (B, hidden + 1).
        """
        self._check_inputs(x, age)
        return self.head(self.encode(x), age, return_details)

    def head(self, m: torch.Tensor, age: torch.Tensor, return_details: bool = False):
        """Attention and classifier on the path outputs ``m`` (B, L, hidden): the logit,
        or the dict of :meth:`forward`."""
        details = self.attend(m)
        z, logit = self.classify(details["n"], age)
        if not return_details:
            return logit
        details.update(m=m, z=z, logit=logit, p=torch.sigmoid(logit))
        return details

    def _check_inputs(self, x: torch.Tensor, age: torch.Tensor) -> None:
        expected = (len(self.contrasts),) + self.input_shape
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}) "
                             f"for contrasts {self.contrasts}, got {tuple(x.shape)}")
        if age.ndim != 1 or age.shape[0] != x.shape[0]:
            raise ValueError(f"age must have shape ({x.shape[0]},), got {tuple(age.shape)}")


def build_model(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE, growth: int = 4, *,
                seed: int | None = None, **kwargs) -> GamerMRIL:
    """Construct a :class:`GamerMRIL` (in training mode).

    ``kwargs`` go to :class:`GamerMRIL` (``stem_channels``, ``n_blocks``,
    ``layers_per_block``, ``bottleneck_factor``, ``compression``, ``hidden``,
    ``attention_dim``, ``contrasts``). Without ``seed`` the weights come from torch's
    global random state (so ``torch.manual_seed`` fixes them); with ``seed`` they come
    from that seed and torch's global random state is left untouched.
    """
    if seed is None:
        return GamerMRIL(input_shape, growth, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GamerMRIL(input_shape, growth, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_shape(shape: Sequence[int]) -> tuple:
    shape = tuple(shape)
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise ValueError(f"input_shape must be 3 positive integers, got {shape}")
    return tuple(int(n) for n in shape)
