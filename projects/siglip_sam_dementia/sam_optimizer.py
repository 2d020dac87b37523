"""SAM for this tool is the shared implementation (davda54-compatible, AMP- and accumulation-safe).

Kept as its own module because users of the original project import it from here.
"""

from shared.sam import SAM, OptimizationStep

__all__ = ["SAM", "OptimizationStep"]
