"""GAMER-MRIL: disability classification and relevance maps from quantitative MRI.

The package holds the logic of every stage of the method (described stage by stage in the
README and in ``docs/``), one module per stage; the Snakemake workflow only wires files to
these functions. Nothing in the package imports snakemake.
"""

__version__ = "0.1.0"

#: The three contrasts, in the order used everywhere (files, channels, network paths).
CONTRASTS = ("qT1", "MWF", "NDI")
