"""Augmentation of training batches (docs/method.md#5-training).

One resampling per sample composes three geometric draws, then noise is added:

* a flip of each spatial axis, independently, with probability ``p_flip``;
* with probability ``p_rot90`` a rotation by k x 90 degrees, k uniform in {1, 2, 3}, in the
  plane of the first two spatial axes (D, H); only when D == H, otherwise this draw is
  ignored (a 90-degree turn would not keep the matrix);
* an affine: a rotation about **each of the three axes** by an angle uniform in
  [-max_rotation_deg, +max_rotation_deg] (composed Rz . Ry . Rx) and an isotropic scale
  uniform in [1 - max_scale, 1 + max_scale], about the centre of the matrix, in voxel units
  (so a rotation stays rigid on a non-cubic matrix); no translation;
* Gaussian noise, zero mean, sd ``noise_sd``, added after the resampling so that it is not
  smoothed by the interpolation; values are not clipped afterwards.

The resampling is trilinear (``grid_sample``, zero outside the matrix, which is the
background value after masking). All three contrasts of a sample get the same draw, the
noise field included (one field broadcast over the channels); different samples get
independent draws. Every random number comes from the ``torch.Generator`` passed in, so a
seeded generator reproduces the augmentation exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Default augmentation parameters (docs/method.md#5-training).
AUGMENT_DEFAULTS = dict(noise_sd=0.2, max_rotation_deg=30.0, max_scale=0.1, p_flip=0.5,
                        p_rot90=0.5)


def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles in radians about axes (D, H, W) -> (B, 3, 3) rotations Rd . Rh . Rw."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def rot(i, j, k):        # rotation about axis k: acts in the (i, j) plane
        m = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], 1).view(-1, 3, 3)
        m = m.clone()
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c[:, k], -s[:, k], s[:, k], c[:, k]
        return m

    return rot(1, 2, 0) @ rot(0, 2, 1) @ rot(0, 1, 2)


def draw_augmentation(batch: int, spatial_shape: Sequence[int], generator: torch.Generator, *,
                      noise_sd: float = 0.2, max_rotation_deg: float = 30.0,
                      max_scale: float = 0.1, p_flip: float = 0.5,
                      p_rot90: float = 0.5) -> dict:
    """Draw the random parameters of :func:`augment` for ``batch`` samples.

    Returns a dict (tensors on the generator's device): ``flip`` (B, 3) bool, ``rot90_k``
    (B,) int in 0..3, ``angles_deg`` (B, 3), ``scale`` (B,), ``matrix`` (B, 3, 3), the map
    from an output voxel's offset from the centre to the input offset it samples (voxel
    units, axes D, H, W), and ``noise`` (B, 1, D, H, W) or None when ``noise_sd`` is 0.
    The number of random values drawn depends only on ``batch`` and the shape.
    """
    shape = tuple(int(n) for n in spatial_shape)
    if len(shape) != 3:
        raise ValueError(f"spatial_shape must have 3 dimensions, got {shape}")
    for name, p in (("p_flip", p_flip), ("p_rot90", p_rot90)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if max_rotation_deg < 0 or not 0 <= max_scale < 1 or noise_sd < 0:
        raise ValueError("max_rotation_deg, noise_sd must be >= 0 and max_scale in [0, 1)")
    dev = generator.device
    u = torch.rand((batch, 10), generator=generator, device=dev, dtype=torch.float64)
    flip = u[:, 0:3] < p_flip
    rot90_k = torch.where(u[:, 3] < p_rot90, 1 + (u[:, 4] * 3).long().clamp(max=2),
                          torch.zeros_like(u[:, 3], dtype=torch.long))
    if shape[0] != shape[1]:
        rot90_k = torch.zeros_like(rot90_k)
    angles_deg = (2 * u[:, 5:8] - 1) * max_rotation_deg
    scale = 1 + (2 * u[:, 8] - 1) * max_scale
    noise = None
    if noise_sd > 0:
        noise = torch.randn((batch, 1) + shape, generator=generator, device=dev) * noise_sd

    # sampling map M = Flip . Rot90(D, H) . (scale * R); exact entries for flips and k*90.
    flips = torch.diag_embed(1.0 - 2.0 * flip.double())
    cos_k = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64, device=dev)[rot90_k]
    sin_k = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64, device=dev)[rot90_k]
    r90 = torch.eye(3, dtype=torch.float64, device=dev).repeat(batch, 1, 1)
    r90[:, 0, 0], r90[:, 0, 1], r90[:, 1, 0], r90[:, 1, 1] = cos_k, -sin_k, sin_k, cos_k
    affine = scale.view(-1, 1, 1) * _rotation_matrices(torch.deg2rad(angles_deg))
    matrix = flips @ r90 @ affine
    return dict(flip=flip, rot90_k=rot90_k, angles_deg=angles_deg, scale=scale,
                matrix=matrix, noise=noise)


def apply_augmentation(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Apply parameters from :func:`draw_augmentation` to a batch (B, C, D, H, W)."""
    if x.ndim != 5:
        raise ValueError(f"x must be (B, C, D, H, W), got shape {tuple(x.shape)}")
    batch, shape = x.shape[0], tuple(x.shape[2:])
    matrix = params["matrix"].to(device=x.device, dtype=torch.float64)
    if matrix.shape[0] != batch:
        raise ValueError(f"parameters for {matrix.shape[0]} samples, batch of {batch}")
    out = x
    eye = torch.eye(3, dtype=torch.float64, device=x.device)
    if not torch.equal(matrix, eye.expand_as(matrix)):
        # voxel offsets -> grid_sample's normalised coordinates (align_corners=False:
        # n = offset * 2 / size), and axes (D, H, W) -> grid order (x=W, y=H, z=D).
        size = torch.tensor(shape, dtype=torch.float64, device=x.device)
        norm = (2.0 / size).view(1, 3, 1) * matrix * (size / 2.0).view(1, 1, 3)
        norm = norm.flip(1).flip(2)
        theta = torch.cat([norm, torch.zeros((batch, 3, 1), dtype=torch.float64,
                                             device=x.device)], dim=2)
        work = x if x.is_floating_point() else x.float()
        grid = F.affine_grid(theta.to(work.dtype), list(work.shape), align_corners=False)
        out = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    noise = params.get("noise")
    if noise is not None:
        out = out + noise.to(device=out.device, dtype=out.dtype)
    return out


def augment(x: torch.Tensor, generator: torch.Generator, noise_sd: float = 0.2,
            max_rotation_deg: float = 30.0, max_scale: float = 0.1, p_flip: float = 0.5,
            p_rot90: float = 0.5) -> torch.Tensor:
    """Randomly flip, turn by 90 degrees, rotate/scale and add noise to a batch.

    ``x``: (B, C, D, H, W) on any device; returns a new tensor of the same shape, dtype
    and device. One draw per sample, shared by its C channels (see the module docstring).
    Random numbers come from ``generator``; for speed give one on ``x``'s device (a CPU
    generator also works with a CUDA batch: the noise is then made on the CPU and moved).
    """
    params = draw_augmentation(x.shape[0], x.shape[2:], generator, noise_sd=noise_sd,
                               max_rotation_deg=max_rotation_deg, max_scale=max_scale,
                               p_flip=p_flip, p_rot90=p_rot90)
    return apply_augmentation(x, params).to(x.dtype)
