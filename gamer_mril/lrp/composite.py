"""Which layer gets which rule, as data (docs/method.md#62-rules-per-layer,
docs/method.md#63-element-wise-products; how to define another rule set: docs/lrp.md).

A :class:`Composite` names one rule per kind of layer of the network; the canonized
modules (:mod:`gamer_mril.lrp.canonize`) ask it for the rule of each layer while they
prepare a walk, and the attention level (:mod:`gamer_mril.lrp.walk`) asks it for the
product rule and the epsilon of the fully connected maps above ``m``. The paper's rule
set is :data:`PAPER` (proposed product rule) and :data:`PAPER_LRP_ALL` (LRP-all); another
rule set is another Composite object, e.g. ``dataclasses.replace(PAPER, conv=Epsilon())``.
Beyond the paper (docs/method.md#68-beyond-the-paper-scenarios-13-to-20): :data:`GAMMA`
(the gamma rule on the convs after the stem) and :data:`GAMMA_FLAT` (the same with the
flat rule on the stem conv), made by :func:`gamma_composite` for another gamma.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import (GAMMA as GAMMA_VALUE, PRODUCT_RULES, ZB, Alpha1Beta0, AvgPool, Epsilon,
                    Flat, Gamma, MaxPool, product_rule)

# what each field's rule must be able to do (checked when a Composite is made)
_NEEDS = dict(first_conv=("prepare",), conv=("prepare",),
              linear=("prepare_linear", "reciprocal"), max_pool=("prepare",),
              avg_pool=("prepare",), product=("split", "to_gate"))


@dataclass(frozen=True)
class Composite:
    """One rule per kind of layer.

    ``first_conv``: the first conv of each path (the stem conv, its BN folded in);
    ``conv``: every other conv (dense layers, transitions); ``linear``: every fully
    connected map (the head FC of each path; the classifier, ``w``, ``U``, ``V`` and the
    sum ``n`` above ``m``); ``max_pool`` (the stem), ``avg_pool`` (the transitions);
    ``product``: the element-wise products ``s * g`` and ``a_l * m_l``. Conv rules have
    ``prepare(conv, x, **hints) -> (output, backward)``, pooling rules
    ``prepare(x, kernel, stride, ...)``, the linear rule ``prepare_linear(x, weight,
    bias)`` and ``reciprocal(z)``, the product rule ``split(s, g, R)`` and ``to_gate``
    (see :mod:`gamer_mril.lrp.rules`).
    """
    first_conv: object
    conv: object
    linear: object
    max_pool: object
    avg_pool: object
    product: object

    def __post_init__(self):
        for field, methods in _NEEDS.items():
            rule = getattr(self, field)
            missing = [m for m in methods if not hasattr(rule, m)]
            if missing:
                raise TypeError(f"Composite.{field}: {type(rule).__name__} lacks {missing}")

    def below_m(self) -> tuple:
        """The rules of the layers below ``m`` (the paths). Walks batched on one forward
        pass share them; only the product rule acts above ``m``."""
        return (self.first_conv, self.conv, self.linear, self.max_pool, self.avg_pool)


def paper_composite(product: str = "proposed") -> Composite:
    """The paper's rules (docs/method.md#62-rules-per-layer): z^B in [0, 1] on the first
    conv, alpha1-beta0 on the other convs, epsilon 1e-8 on the linear maps, winner takes
    all (max pooling), proportional (average pooling); ``product``: a name of
    :data:`~gamer_mril.lrp.rules.PRODUCT_RULES`."""
    return Composite(first_conv=ZB(), conv=Alpha1Beta0(), linear=Epsilon(),
                     max_pool=MaxPool(), avg_pool=AvgPool(), product=product_rule(product))


#: {product rule name: the paper's composite with that product rule}.
PAPER_COMPOSITES = {name: paper_composite(name) for name in PRODUCT_RULES}

#: The paper's rule set with the proposed product rule, and with LRP-all.
PAPER = PAPER_COMPOSITES["proposed"]
PAPER_LRP_ALL = PAPER_COMPOSITES["lrp-all"]


def gamma_composite(gamma: float = GAMMA_VALUE, flat_first: bool = False,
                    product: str = "proposed") -> Composite:
    """The paper's composite with the gamma rule (:class:`~gamer_mril.lrp.rules.Gamma`)
    on every conv after the stem; the stem conv keeps z^B, or with ``flat_first`` gets
    the flat rule (:class:`~gamer_mril.lrp.rules.Flat`); epsilon on the linear maps, the
    pooling rules and the product rule ``product`` (proposed) as in the paper's."""
    return Composite(first_conv=Flat() if flat_first else ZB(), conv=Gamma(float(gamma)),
                     linear=Epsilon(), max_pool=MaxPool(), avg_pool=AvgPool(),
                     product=product_rule(product))


#: Beyond the paper: z^B, gamma 0.25 (as zennit's EpsilonGammaBox), epsilon, proposed.
GAMMA = gamma_composite()
#: Beyond the paper: the flat rule on the stem conv, then as :data:`GAMMA`.
GAMMA_FLAT = gamma_composite(flat_first=True)


def resolve(rule) -> Composite:
    """The composite a caller means: a Composite as is, a product rule name
    (``"proposed"``, ``"lrp-all"``) as the paper's rules with that product rule; anything
    else is a ValueError."""
    if isinstance(rule, Composite):
        return rule
    product_rule(rule)                                       # ValueError if unknown
    return PAPER_COMPOSITES[rule]
