"""The MoE shape the laws recommend for a budget.

  python -m fitting.design --C 1e22 [--A 0.031] [--top_k 8] [--coefficients=paper|report.json]

G is the unified law's optimum G* = 2^(-beta / (2 gamma)) (11.3 with the paper's Table 2), one
shared expert (the paper's Key Takeaway 3), A the requested activation ratio (default 3.1%, the
paper's validation point; EL keeps rising as A falls, so A is a cost choice, not an optimum);
layers, d_model, learning rate, batch and tokens come from fitting.model_design.
"""

from __future__ import annotations

import argparse
import json

from fitting import laws
from fitting import model_design as design_lib
from ling_jax import flops


def recommend(C: float, A: float = 0.031, top_k: int = 8, coefficients='paper') -> dict:
  if coefficients == 'paper':
    params = laws.PAPER_UNIFIED_EL
  else:
    with open(coefficients) as f:
      params = laws.unified_el_from_report(json.load(f))['params']
  g_star = laws.UNIFIED_EL.optimal_granularity(laws.UNIFIED_EL.vector(params))
  n_experts = max(top_k, round((top_k + 1) / A - 1))  # A = (E_a + E_s) / (E + E_s), E_s = 1
  shape = design_lib.MoEShape(n_experts, top_k, 1, granularity=g_star)
  d = design_lib.design(C, shape)
  arch = design_lib.architecture(d.model, 4096, 126_464)
  el = float(laws.unified_el(flops.activation_ratio(arch), flops.granularity(arch), C, params)[0])
  return dict(
      C=C,
      G_star=g_star,
      A=flops.activation_ratio(arch),
      G=flops.granularity(arch),
      model=d.model,
      learning_rate=d.learning_rate,
      batch_tokens=d.batch_tokens,
      tokens=d.tokens,
      N=flops.non_embedding_params(arch),
      N_a=flops.non_embedding_params(arch, active=True),
      predicted_EL=el,
      reasons=list(d.reasons),
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--C', type=float, required=True, help='training compute, FLOPs')
  parser.add_argument('--A', type=float, default=0.031, help='activation ratio (fraction)')
  parser.add_argument('--top_k', type=int, default=8)
  parser.add_argument('--coefficients', default='paper')
  args = parser.parse_args(argv)
  r = recommend(args.C, args.A, args.top_k, args.coefficients)
  m = r['model']
  print(
      f"C = {r['C']:.3g} FLOPs: G* = {r['G_star']:.2f}; {m['n_experts']} experts of width "
      f"{m['d_expert']} (G = {r['G']:.2f}), top-{m['top_k']} + {m['n_shared']} shared "
      f"(A = {r['A']:.2%}); {m['n_layers']} layers x d_model {m['d_model']}, "
      f"{m['n_heads']}/{m['n_kv_heads']} heads; N = {r['N']:.3g}, N_a = {r['N_a']:.3g}"
  )
  print(
      f"learning rate {r['learning_rate']:.3g}, batch {r['batch_tokens']:.3g} tokens, "
      f"{r['tokens']:.3g} tokens; predicted EL {r['predicted_EL']:.2f}"
  )
  for reason in r['reasons']:
    print('  ' + reason)
  return r


if __name__ == '__main__':
  main()
