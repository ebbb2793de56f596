"""Layer-wise relevance propagation (LRP) for the GAMER-MRIL network, plus two baselines.

The engine follows docs/method.md#6-layer-wise-relevance-propagation and the interface
of docs/lrp.md. It is plain PyTorch: it knows the layout of :mod:`gamer_mril.network`
and walks it module by module, without hooks and without third-party attribution
libraries. It is laid out as zennit lays out its code:

* :mod:`~gamer_mril.lrp.rules`: one class per rule (z^B, alpha1-beta0, epsilon, max and
  average pooling, the proposed and LRP-all product rules; gamma and flat beyond the
  paper) and the single-layer rules on plain tensors (docs/method.md#62-rules-per-layer,
  #63-element-wise-products);
* :mod:`~gamer_mril.lrp.composite`: which layer gets which rule, as data; the paper's
  rule set is :data:`PAPER` (and :data:`PAPER_LRP_ALL`), another rule set is another
  :class:`Composite` (:data:`GAMMA`, :data:`GAMMA_FLAT` beyond the paper);
* :mod:`~gamer_mril.lrp.canonize`: the batch normalisations rewritten away, and the
  canonized modules that prepare each layer's rule in one forward pass
  (docs/method.md#61-canonization);
* :mod:`~gamer_mril.lrp.walk`: the relevance from the logit or from an attention weight
  down to the voxels, :func:`explain` and :func:`conservation`
  (docs/method.md#64-where-relevance-starts);
* :mod:`~gamer_mril.lrp.gradients`: saliency, integrated gradients (from any reference)
  and SmoothGrad by autograd on the original network (docs/method.md#66-gradient-baselines);
* :mod:`~gamer_mril.lrp.scenarios`: the twelve scenarios of Table I, the eight beyond
  the paper (SmoothGrad, the gamma composites, integrated gradients from a smoothed
  reference) and :func:`scenario_maps` (docs/method.md#67-the-twelve-scenarios,
  docs/method.md#68-beyond-the-paper-scenarios-13-to-20).

All tensors stay on the device and in the dtype of the model. On a 48 x 48 x 56 input
each LRP scenario costs about 0.6 of one training forward+backward pass
(``bench/lrp.py``).
"""

from __future__ import annotations

from .canonize import CanonicalGamerMRIL, CanonicalPath, Clamp, canonize
from .composite import (GAMMA, GAMMA_FLAT, PAPER, PAPER_COMPOSITES, PAPER_LRP_ALL, Composite,
                        gamma_composite, paper_composite)
from .gradients import integrated_gradients, saliency, smoothed_reference, smoothgrad
from .rules import (EPSILON, PRODUCT_RULES, PRODUCTS, ZB, ZB_HIGH, ZB_LOW, Alpha1Beta0,
                    AvgPool, Epsilon, Flat, Gamma, MaxPool, ProposedProduct, SignalTakesAll,
                    alpha1beta0_conv, avgpool, epsilon_linear, flat_conv, gamma_conv,
                    gamma_linear, maxpool, product, zb_conv)
from .scenarios import SCENARIOS, Scenario, scenario_maps
from .walk import Explanation, conservation, explain

__all__ = [
    "EPSILON", "PRODUCT_RULES", "PRODUCTS", "ZB_LOW", "ZB_HIGH",
    "ZB", "Alpha1Beta0", "Epsilon", "Gamma", "Flat", "MaxPool", "AvgPool",
    "ProposedProduct", "SignalTakesAll", "epsilon_linear", "alpha1beta0_conv", "zb_conv",
    "gamma_conv", "gamma_linear", "flat_conv", "avgpool", "maxpool", "product",
    "Composite", "PAPER", "PAPER_LRP_ALL", "PAPER_COMPOSITES", "paper_composite",
    "GAMMA", "GAMMA_FLAT", "gamma_composite",
    "Clamp", "CanonicalPath", "CanonicalGamerMRIL", "canonize",
    "Explanation", "explain", "conservation",
    "saliency", "integrated_gradients", "smoothgrad", "smoothed_reference",
    "Scenario", "SCENARIOS", "scenario_maps",
]
