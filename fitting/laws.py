"""Every functional form of the paper's laws, in one place.

Pure Python + math only: importable from the training side (designs, configs) and from any
scientific Python (Colab) without JAX.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = coefficient * x ** exponent.

  Used for the hyperparameter laws (x = C in FLOPs, paper Eq. 3) and the allocation laws
  (x = C, y = M_opt in FLOPs/token or D_opt in tokens, paper Table 1).
  """

  name: str
  coefficient: float
  exponent: float
  x_unit: str
  y_unit: str
  source: str = ''

  def __call__(self, x: float) -> float:
    return self.coefficient * x ** self.exponent

  def inverse(self, y: float) -> float:
    """x such that law(x) = y."""
    return (y / self.coefficient) ** (1.0 / self.exponent)


# Paper Eq. 3 (MoE, 64 experts / 4 active / 1 shared). C is training compute M * D.
MOE_LEARNING_RATE = PowerLaw('moe_learning_rate', 1.1576, -0.1529, 'FLOPs', 'peak learning rate',
                             'arXiv 2507.17702 Eq. 3')
MOE_BATCH_TOKENS = PowerLaw('moe_batch_tokens', 0.0694, 0.3644, 'FLOPs', 'tokens per batch',
                            'arXiv 2507.17702 Eq. 3 (unit inferred: tokens; paper.md 2.3)')

# Paper Table 1: compute-optimal model scale M (FLOPs/token) and data D (tokens).
DENSE_OPTIMAL_M = PowerLaw('dense_optimal_M', 0.0655, 0.5422, 'FLOPs', 'FLOPs/token',
                           'arXiv 2507.17702 Table 1')
DENSE_OPTIMAL_D = PowerLaw('dense_optimal_D', 15.2582, 0.4578, 'FLOPs', 'tokens',
                           'arXiv 2507.17702 Table 1')
MOE_OPTIMAL_M = PowerLaw('moe_optimal_M', 0.1915, 0.5095, 'FLOPs', 'FLOPs/token',
                         'arXiv 2507.17702 Table 1')
MOE_OPTIMAL_D = PowerLaw('moe_optimal_D', 5.2232, 0.4905, 'FLOPs', 'tokens',
                         'arXiv 2507.17702 Table 1')
