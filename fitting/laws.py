"""Every functional form of the paper's laws, in one place.

Pure Python + numpy: importable from the training side (designs, configs) and from any
scientific Python (Colab) without JAX.

Each fittable law is a `Law`: its parameters (each a `Param` with bounds and starting values), a
formula, and `log_predict`, the natural log of its prediction, with its exact Jacobian (fits
minimise residuals of log y). What only some laws can do lives on them: `vp_basis` for the sums
of non-negative terms that variable projection fits, `inverse` for the frontiers EL inverts.
Log bases are part of each formula and stated there: the paper's unified law reproduces its own
numbers only with log10 for C and log2 for G (arXiv 2507.17702 §4.2.2, Table 2). Natural logs
otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

# --- Published point laws (used by designs and configs) ----------------------------------------


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = coefficient * x ** exponent, with fixed published coefficients."""

  name: str
  coefficient: float
  exponent: float
  x_unit: str
  y_unit: str
  source: str = ''

  def __call__(self, x: float) -> float:
    return self.coefficient * x**self.exponent

  def inverse(self, y: float) -> float:
    """x such that law(x) = y."""
    return (y / self.coefficient) ** (1.0 / self.exponent)


# Paper Eq. 3 (MoE, 64 experts / 4 active / 1 shared). C is training compute M * D.
MOE_LEARNING_RATE = PowerLaw(
    'moe_learning_rate', 1.1576, -0.1529, 'FLOPs', 'peak learning rate', 'arXiv 2507.17702 Eq. 3'
)
MOE_BATCH_TOKENS = PowerLaw(
    'moe_batch_tokens',
    0.0694,
    0.3644,
    'FLOPs',
    'tokens per batch',
    'arXiv 2507.17702 Eq. 3 (unit inferred: tokens; §2.2)',
)

# Paper Table 1: compute-optimal model scale M (FLOPs/token) and data D (tokens).
DENSE_OPTIMAL_M = PowerLaw(
    'dense_optimal_M', 0.0655, 0.5422, 'FLOPs', 'FLOPs/token', 'arXiv 2507.17702 Table 1'
)
DENSE_OPTIMAL_D = PowerLaw(
    'dense_optimal_D', 15.2582, 0.4578, 'FLOPs', 'tokens', 'arXiv 2507.17702 Table 1'
)
MOE_OPTIMAL_M = PowerLaw(
    'moe_optimal_M', 0.1915, 0.5095, 'FLOPs', 'FLOPs/token', 'arXiv 2507.17702 Table 1'
)
MOE_OPTIMAL_D = PowerLaw(
    'moe_optimal_D', 5.2232, 0.4905, 'FLOPs', 'tokens', 'arXiv 2507.17702 Table 1'
)


# --- Fittable laws -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Param:
  """One parameter of a law: its name, its (low, high) bounds and its starting values."""

  name: str
  bounds: tuple[float, float]
  starts: tuple[float, ...]  # the fit searches the product of every parameter's starts


@dataclasses.dataclass(frozen=True)
class Law:
  """A functional form y = f(X; theta), fitted in log space (residual log f - log y)."""

  name: str
  parameters: tuple[Param, ...]
  covariates: tuple[str, ...]
  target: str
  formula: str

  @property
  def params(self) -> tuple[str, ...]:
    return tuple(p.name for p in self.parameters)

  @property
  def bounds(self) -> tuple[tuple[float, float], ...]:
    return tuple(p.bounds for p in self.parameters)

  @property
  def grid(self) -> tuple[tuple[float, ...], ...]:
    return tuple(p.starts for p in self.parameters)

  # Variable projection (fitting.core, objective 'vpnls'): laws that are a sum of non-negative
  # terms, y = sum_j c_j basis_j(X; nonlinear), define how many nonlinear parameters they have,
  # the basis, and theta from (ln c, nonlinear).
  n_nonlinear = 0

  def vp_basis(self, nonlinear, X) -> np.ndarray:
    raise NotImplementedError(f'{self.name} is not a sum of non-negative terms')

  def vp_theta(self, log_coefficients, nonlinear) -> np.ndarray:
    raise NotImplementedError(f'{self.name} is not a sum of non-negative terms')

  def derived(self, theta) -> dict:
    """Quantities that follow from a fit and a report should show (an optimum, ...)."""
    del theta
    return {}

  def inverse(self, theta, y) -> np.ndarray:
    """The covariate at which a one-covariate law reaches y (NaN where it never does)."""
    raise NotImplementedError(f'{self.name} cannot be inverted')

  def log_predict(self, theta: np.ndarray, X: Mapping[str, np.ndarray]) -> np.ndarray:
    raise NotImplementedError

  def jacobian(self, theta: np.ndarray, X: Mapping[str, np.ndarray]) -> np.ndarray:
    """d log_predict / d theta, shape [n, len(params)]."""
    raise NotImplementedError

  def predict(self, theta, X) -> np.ndarray:
    return np.exp(self.log_predict(np.asarray(theta, float), X))

  def named(self, theta) -> dict[str, float]:
    return dict(zip(self.params, map(float, theta)))

  def vector(self, values: Mapping[str, float]) -> np.ndarray:
    return np.array([values[p] for p in self.params], float)


def _lse_weights(*terms):
  """log(sum(exp(terms))) and each term's share, stably."""
  stacked = np.stack(terms)
  top = stacked.max(axis=0)
  shares = np.exp(stacked - top)
  total = shares.sum(axis=0)
  return top + np.log(total), shares / total


class LogLinear(Law):
  """ln y = c0 + sum_i c_i ln x_i: power laws y = e^c0 * prod x_i^c_i (hyperparameter laws,
  allocation laws, the v1 frontier L = alpha C^-beta with c1 = -beta)."""

  def log_predict(self, theta, X):
    out = np.full(len(X[self.covariates[0]]), theta[0], float)
    for c, name in zip(theta[1:], self.covariates):
      out = out + c * np.log(X[name])
    return out

  def jacobian(self, theta, X):
    n = len(X[self.covariates[0]])
    return np.column_stack([np.ones(n)] + [np.log(X[c]) for c in self.covariates])

  def inverse(self, theta, y):
    if len(self.covariates) != 1:
      raise NotImplementedError(f'{self.name}: only a one-covariate power law inverts')
    log_coefficient, exponent = theta
    return np.exp((np.log(np.asarray(y, float)) - log_coefficient) / exponent)


def log_linear(name: str, covariates: Sequence[str], target: str) -> LogLinear:
  return LogLinear(
      name=name,
      covariates=tuple(covariates),
      target=target,
      parameters=(Param('log_coefficient', (-100.0, 100.0), (0.0,)),)
      + tuple(Param(f'exponent_{c}', (-5.0, 5.0), (0.0,)) for c in covariates),
      formula=f'ln {target} = log_coefficient + '
      + ' + '.join(f'exponent_{c} ln {c}' for c in covariates),
  )


class FrontierWithFloor(Law):
  """L(C) = b + alpha C^-beta, as ln L = LSE(log_b, log_alpha - beta ln C) (ICLR form)."""

  def log_predict(self, theta, X):
    log_b, log_alpha, beta = theta
    return _lse_weights(np.full(len(X['C']), log_b), log_alpha - beta * np.log(X['C']))[0]

  def jacobian(self, theta, X):
    log_b, log_alpha, beta = theta
    _, w = _lse_weights(np.full(len(X['C']), log_b), log_alpha - beta * np.log(X['C']))
    return np.column_stack([w[0], w[1], -w[1] * np.log(X['C'])])

  n_nonlinear = 1

  def vp_basis(self, nonlinear, X):
    (beta,) = nonlinear
    return np.column_stack([np.ones(len(X['C'])), X['C'] ** -beta])

  def vp_theta(self, log_coefficients, nonlinear):
    return np.array([log_coefficients[0], log_coefficients[1], nonlinear[0]])

  def inverse(self, theta, y):
    log_b, log_alpha, beta = theta
    excess = np.asarray(y, float) - np.exp(log_b)
    with np.errstate(invalid='ignore', divide='ignore'):
      return np.where(excess > 0, np.exp((np.log(excess) - log_alpha) / -beta), np.nan)


FRONTIER = log_linear('frontier', ['C'], 'loss')  # L = alpha C^-beta: exponent_C = -beta
FRONTIER_WITH_FLOOR = FrontierWithFloor(
    name='frontier_with_floor',
    covariates=('C',),
    target='loss',
    parameters=(
        Param('log_b', (-10.0, 5.0), (-2.0, 0.0, 0.5, 1.0)),
        Param('log_alpha', (-20.0, 60.0), (0.0, 5.0, 10.0, 20.0)),
        Param('beta', (0.0, 2.0), (0.05, 0.1, 0.2, 0.4)),
    ),
    formula='L = exp(log_b) + exp(log_alpha) C^-beta; C in FLOPs, ln natural',
)


class Chinchilla(Law):
  """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022), as ln L = LSE(e, a - alpha ln N,
  b - beta ln D) with E = e^e, A = e^a, B = e^b. N may be the paper's M."""

  def _terms(self, theta, X):
    e, a, b, alpha, beta = theta
    return (np.full(len(X['N']), e), a - alpha * np.log(X['N']), b - beta * np.log(X['D']))

  def log_predict(self, theta, X):
    return _lse_weights(*self._terms(theta, X))[0]

  def jacobian(self, theta, X):
    _, w = _lse_weights(*self._terms(theta, X))
    return np.column_stack([w[0], w[1], w[2], -w[1] * np.log(X['N']), -w[2] * np.log(X['D'])])

  n_nonlinear = 2

  def vp_basis(self, nonlinear, X):
    alpha, beta = nonlinear
    return np.column_stack([np.ones(len(X['N'])), X['N'] ** -alpha, X['D'] ** -beta])

  def vp_theta(self, log_coefficients, nonlinear):
    return np.concatenate([log_coefficients, nonlinear])


_SCALE_STARTS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_EXPONENT_STARTS = (0.0, 0.5, 1.0, 1.5, 2.0)
CHINCHILLA = Chinchilla(
    name='chinchilla',
    covariates=('N', 'D'),
    target='loss',
    parameters=(
        Param('e', (-5.0, 5.0), (-1.0, -0.5, 0.0, 0.5, 1.0)),
        Param('a', (-10.0, 40.0), _SCALE_STARTS),
        Param('b', (-10.0, 40.0), _SCALE_STARTS),
        Param('alpha', (0.0, 2.5), _EXPONENT_STARTS),
        Param('beta', (0.0, 2.5), _EXPONENT_STARTS),
    ),
    formula='L = exp(e) + exp(a) N^-alpha + exp(b) D^-beta; ln natural',
)


def saturated_activation(A, log_A_start, inv_A_max):
  """ln A_hat with 1/A_hat = 1/(A + s) + 1/A_max, s = (1/A_start - 1/A_max)^-1 (paper Eq. 10,
  Clark et al.'s transform with the lower bound 0), and its derivatives in
  (log_A_start, inv_A_max)."""
  A = np.asarray(A, float)
  q = math.exp(-log_A_start)
  s = 1.0 / (q - inv_A_max)
  inner = 1.0 / (A + s) + inv_A_max
  log_hat = -np.log(inner)
  d_s = (1.0 / (A + s) ** 2) / inner
  return log_hat, d_s * s * s * q, d_s * s * s - 1.0 / inner


def _saturation_params(log_start_starts, inv_max_starts) -> tuple[Param, Param]:
  """A_start (as its log) and 1 / A_max of the saturating transform, shared by Eq. 10 and 13."""
  return (
      Param('log_A_start', (-12.0, 0.0), log_start_starts),
      Param('inv_A_max', (0.0, 0.999), inv_max_starts),
  )


class ELActivation(Law):
  """Eq. 10: ln EL = a_A ln A_hat (at fixed C and G)."""

  def log_predict(self, theta, X):
    a_A, log_start, inv_max = theta
    return a_A * saturated_activation(X['A'], log_start, inv_max)[0]

  def jacobian(self, theta, X):
    a_A, log_start, inv_max = theta
    u, du_ds, du_dm = saturated_activation(X['A'], log_start, inv_max)
    return np.column_stack([u, a_A * du_ds, a_A * du_dm])


EL_ACTIVATION = ELActivation(
    name='el_activation',
    covariates=('A',),
    target='EL',
    parameters=(
        Param('a_A', (-5.0, 5.0), (-1.0, -0.5, -0.2, 0.5)),
        *_saturation_params((-6.0, -4.0, -2.0), (0.0, 0.5)),
    ),
    formula='ln EL = a_A ln A_hat, 1/A_hat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max',
)


class ELGranularity(Law):
  """Eq. 11: ln EL = a_G + b_G log2 G (log2 G + c_G) (at fixed C and A); optimum G* = 2^(-c_G/2)
  when b_G < 0."""

  def log_predict(self, theta, X):
    a, b, c = theta
    g = np.log2(X['G'])
    return a + b * g * (g + c)

  def jacobian(self, theta, X):
    _, b, c = theta
    g = np.log2(X['G'])
    return np.column_stack([np.ones_like(g), g * (g + c), b * g])

  def derived(self, theta):
    """The optimum G* = 2^(-c_G / 2), where b_G < 0 makes the parabola open downwards."""
    _, b, c = theta
    return dict(G_star=2.0 ** (-c / 2) if b < 0 else None)


EL_GRANULARITY = ELGranularity(
    name='el_granularity',
    covariates=('G',),
    target='EL',
    parameters=(
        Param('a_G', (-10.0, 10.0), (0.0, 1.0)),
        Param('b_G', (-5.0, 5.0), (-0.1, -0.01)),
        Param('c_G', (-20.0, 20.0), (-8.0, -4.0, 0.0)),
    ),
    formula='ln EL = a_G + b_G log2 G (log2 G + c_G)',
)


class ELCompute(Law):
  """Eq. 12: ln EL = a_C log10 C + c_C (at fixed A and G)."""

  def log_predict(self, theta, X):
    return theta[0] * np.log10(X['C']) + theta[1]

  def jacobian(self, theta, X):
    c = np.log10(X['C'])
    return np.column_stack([c, np.ones_like(c)])


EL_COMPUTE = ELCompute(
    name='el_compute',
    covariates=('C',),
    target='EL',
    parameters=(Param('a_C', (-5.0, 5.0), (0.0, 0.1)), Param('c_C', (-100.0, 100.0), (0.0,))),
    formula='ln EL = a_C log10 C + c_C',
)


class UnifiedEL(Law):
  """Eq. 13: EL(A, G, C) = A_hat^(a + d log10 C + gamma (log2 G)^2 + beta log2 G)."""

  def _parts(self, theta, X):
    a, d, gamma, beta, log_start, inv_max = theta
    g, c = np.log2(X['G']), np.log10(X['C'])
    u, du_ds, du_dm = saturated_activation(X['A'], log_start, inv_max)
    exponent = a + d * c + gamma * g * g + beta * g
    return u, du_ds, du_dm, exponent, g, c

  def log_predict(self, theta, X):
    u, _, _, exponent, _, _ = self._parts(theta, X)
    return u * exponent

  def jacobian(self, theta, X):
    u, du_ds, du_dm, exponent, g, c = self._parts(theta, X)
    return np.column_stack([u, u * c, u * g * g, u * g, exponent * du_ds, exponent * du_dm])

  def optimal_granularity(self, theta) -> float:
    """G* maximising EL at any A < 1: 2^(-beta / (2 gamma))."""
    return 2.0 ** (-theta[3] / (2 * theta[2]))


UNIFIED_EL = UnifiedEL(
    name='unified_el',
    covariates=('A', 'G', 'C'),
    target='EL',
    parameters=(
        Param('a', (-10.0, 10.0), (0.5, 1.5)),
        Param('d', (-2.0, 2.0), (-0.1, 0.0)),
        Param('gamma', (-1.0, 1.0), (0.0, 0.02)),
        Param('beta', (-2.0, 2.0), (-0.1, 0.0)),
        *_saturation_params((-5.0, -3.0), (0.0,)),
    ),
    formula='EL = A_hat^(a + d log10 C + gamma (log2 G)^2 + beta log2 G), A_hat as in Eq. 10',
)

# Paper Table 2 (log10 C, log2 G: the bases under which it reproduces the paper).
PAPER_UNIFIED_EL = dict(
    a=1.23,
    d=-7.61e-2,
    gamma=1.67e-2,
    beta=-1.17e-1,
    log_A_start=math.log(1.63e-2),
    inv_A_max=1 / 5.28e16,
)


class DirectLoss(Law):
  """Beyond the paper (reviewers' request): a loss law in A, G and C directly,
  L = E + exp(k + p ln A + q log2 G + w (log2 G)^2) C^-alpha, as ln L = LSE(e, ...)."""

  def _terms(self, theta, X):
    e, k, alpha, p, q, w = theta
    g = np.log2(X['G'])
    return np.full(len(g), e), k - alpha * np.log(X['C']) + p * np.log(X['A']) + q * g + w * g * g

  def log_predict(self, theta, X):
    return _lse_weights(*self._terms(theta, X))[0]

  def jacobian(self, theta, X):
    _, s = _lse_weights(*self._terms(theta, X))
    g = np.log2(X['G'])
    w2 = s[1]
    return np.column_stack(
        [s[0], w2, -w2 * np.log(X['C']), w2 * np.log(X['A']), w2 * g, w2 * g * g]
    )


DIRECT_LOSS = DirectLoss(
    name='direct_loss',
    covariates=('A', 'G', 'C'),
    target='loss',
    parameters=(
        Param('e', (-10.0, 5.0), (-1.0, 0.0, 0.5)),
        Param('k', (-20.0, 60.0), (2.0, 5.0, 10.0)),
        Param('alpha', (0.0, 2.0), (0.05, 0.15, 0.3)),
        Param('p', (-2.0, 2.0), (0.0, 0.2)),
        Param('q', (-2.0, 2.0), (0.0,)),
        Param('w', (-1.0, 1.0), (0.0,)),
    ),
    formula='L = exp(e) + exp(k + p ln A + q log2 G + w (log2 G)^2) C^-alpha',
)


def unified_el(A, G, C, coefficients: Mapping[str, float] = PAPER_UNIFIED_EL):
  """EL(A, G, C) of Eq. 13; the paper's Table 2 coefficients by default."""
  X = dict(
      A=np.atleast_1d(np.asarray(A, float)),
      G=np.atleast_1d(np.asarray(G, float)),
      C=np.atleast_1d(np.asarray(C, float)),
  )
  return UNIFIED_EL.predict(UNIFIED_EL.vector(coefficients), X)


LAWS = {
    law.name: law
    for law in (
        FRONTIER,
        FRONTIER_WITH_FLOOR,
        CHINCHILLA,
        EL_ACTIVATION,
        EL_GRANULARITY,
        EL_COMPUTE,
        UNIFIED_EL,
        DIRECT_LOSS,
    )
}


def unified_el_from_report(report: Mapping) -> dict:
  """The fitted Eq. 13 entry of a `fitting.fit` report.json (its 'el_laws' section); a report of
  the law alone (an older layout with 'unified_el' at the top) is read too."""
  entry = report.get('el_laws', report).get('unified_el')
  if not entry or 'params' not in entry:
    reason = (entry or {}).get('error', 'no el_laws.unified_el section')
    raise ValueError(
        f'the report holds no fitted unified law ({reason}); fit activation_ratio '
        'and granularity runs with `python -m fitting.fit` first.'
    )
  return entry
