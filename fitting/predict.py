"""EL of an MoE shape at a budget, the equivalent dense compute, and the dense model it matches.

  python -m fitting.predict --A 0.031 --G 12 --C 1e22
  python -m fitting.predict --A 0.031 --G 12 --C 1e22 --coefficients=out/report.json

With the paper's coefficients (Table 2) the EL is a point estimate: the paper published no
intervals. With a report.json from `python -m fitting.fit` that holds bootstrap draws of the
unified law, the 95% interval comes from those draws.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from fitting import core
from fitting import laws
from fitting import model_design as design_lib
from ling_jax import flops


def predict(A: float, G: float, C: float, coefficients='paper') -> dict:
  if coefficients == 'paper':
    theta, draws, source = (
        laws.UNIFIED_EL.vector(laws.PAPER_UNIFIED_EL),
        None,
        'paper Table 2 (no interval published)',
    )
  else:
    with open(coefficients) as f:
      unified = laws.unified_el_from_report(json.load(f))
    theta = laws.UNIFIED_EL.vector(unified['params'])
    draws = np.array(unified['draws']) if unified.get('draws') else None
    source = coefficients
  X = dict(A=np.array([A]), G=np.array([G]), C=np.array([C]))
  el = float(laws.UNIFIED_EL.predict(theta, X)[0])
  out = dict(A=A, G=G, C=C, EL=el, source=source, definition='unified law (Eq. 13)')
  if draws is not None and len(draws):
    out['EL_interval'] = core.interval(np.array([laws.UNIFIED_EL.predict(t, X)[0] for t in draws]))
  c_dense = el * C
  dense = design_lib.design(c_dense, design_lib.MoEShape())
  arch = design_lib.architecture(dense.model, 4096, 126_464)
  out.update(
      C_dense=c_dense,
      dense_M_opt=laws.DENSE_OPTIMAL_M(c_dense),
      dense_model=dense.model,
      dense_N=flops.non_embedding_params(arch),
      dense_tokens=dense.tokens,
  )
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--A', type=float, required=True, help='activation ratio (fraction)')
  parser.add_argument('--G', type=float, required=True, help='granularity 2 d_model / d_expert')
  parser.add_argument('--C', type=float, required=True, help='MoE training compute, FLOPs')
  parser.add_argument('--coefficients', default='paper', help="'paper' or a report.json")
  args = parser.parse_args(argv)
  try:
    r = predict(args.A, args.G, args.C, args.coefficients)
  except (OSError, ValueError) as error:
    sys.exit(f'fitting.predict: --coefficients={args.coefficients}: {error}')
  interval = (
      f" (95% interval {r['EL_interval'][0]:.3g} - {r['EL_interval'][1]:.3g})"
      if 'EL_interval' in r
      else ''
  )
  print(
      f"EL(A={r['A']:.3g}, G={r['G']:.3g}, C={r['C']:.3g} FLOPs) = {r['EL']:.3f}{interval} "
      f"[{r['source']}]"
  )
  print(
      f"equivalent dense compute {r['C_dense']:.3g} FLOPs; compute-optimal dense model: "
      f"{r['dense_model']['n_layers']} layers x d_model {r['dense_model']['d_model']}, "
      f"N = {r['dense_N']:.3g} non-embedding parameters, {r['dense_tokens']:.3g} tokens"
  )
  return r


if __name__ == '__main__':
  main()
