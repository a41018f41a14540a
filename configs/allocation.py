"""Model/data allocation (paper Sec. 2.3, Table 1): IsoFLOP profiles, D = C / M, dense and MoE.

  python -m experiments.run --config=configs/allocation.py --workdir=gs://BUCKET/studies \
      --config.data.paths=gs://BUCKET/tokens/train.bin --sweep_index=$TASK_ID
  python -m experiments.run --config=configs/allocation.py:local --workdir=/tmp/studies

At each budget, models with M = M_target(C) x {1/4, 1/2, 1, 2, 4} (fitting.model_design picks the
backbones; MoE 64 experts / 4 active / 1 shared, G = 2, and dense), learning rate and batch from
the hyperparameter law. `paper` (default): budgets 1e18 .. 1e20 FLOPs, M_target from Table 1,
Eq. 3, 50 members. `local` (step 2 of the local protocol, docs/replication.md): budgets 3e11 ..
1e13 FLOPs (1.5 decades), M_target from Table 1 and a wider span (1/8 .. 4: byte-level optima
need not follow the BPE law) over the local ladder and two one-layer rungs below it, learning rate
and batch from the local hyperparameter law; a size whose D = C / M would pass 4 epochs of the
train split (LOCAL_MAX_EPOCHS x protocol.LOCAL_TRAIN_TOKENS) is left out.
`smoke`: 1 budget, 3 sizes. The paper fitted M_opt = 0.1915 C^0.5095, D_opt = 5.2232 C^0.4905
for MoE and 0.0655 C^0.5422, 15.2582 C^0.4578 for dense: compute-optimal MoE models are smaller
and see more data.
"""

from configs import common
from configs import hparams
from experiments import protocol
from fitting import laws
from fitting import model_design as design_lib

BUDGETS = {
    'paper': [1e18, 3e18, 1e19, 3e19, 1e20],
    'local': [3e11, 1.1e12, 3.5e12, 1e13],
    'smoke': [3e8],
}
SIZES = {'paper': [0.25, 0.5, 1, 2, 4], 'local': [0.125, 0.25, 0.5, 1, 2, 4], 'smoke': [0.5, 1, 2]}
# At local scale two one-layer rungs below the ladder's smallest backbone
# (protocol.LOCAL_ONE_LAYER_RUNGS): about 3x apart at the bottom, its rungs would give the smallest
# budget only two sizes, too few for a parabola, and the MoE optimum at 3e11 FLOPs lay at the
# d_model 24 rung (results/local/allocation, first run), so a d_model 12 rung (head dim 12) lies
# below it. The designs made from this study's laws choose from the same ladder
# (common.fitted_design_options).
# Repeated data costs little up to about 4 epochs (Muennighoff et al. 2023, "Scaling Data-
# Constrained Language Models", arXiv 2305.16264, Sec. 5): a size whose D = C / M would pass
# LOCAL_MAX_EPOCHS epochs of the train split is left out. One epoch left the MoE profile at 1e13
# FLOPs without sizes below its best run.
LOCAL_MAX_EPOCHS = 4


def get_config(arg=None):
  scale = common.parse_scale(arg)
  return common.study_config('allocation', scale, __file__, designed=True)


def get_sweep(arg=None):
  scale = common.parse_scale(arg)
  members = []
  for kind, shape in hparams.SHAPES.items():
    m_law = laws.MOE_OPTIMAL_M if kind == 'moe' else laws.DENSE_OPTIMAL_M
    for budget in BUDGETS[scale]:
      optimum = common.optimal_m(budget, 'smoke', kind) if scale == 'smoke' else m_law(budget)
      chosen = set()
      options = common.fitted_design_options(scale)
      for factor in SIZES[scale]:
        d = design_lib.design(budget, shape, m_target=factor * optimum, **options)
        key = (d.model['n_layers'], d.model['d_model'])
        if key in chosen:  # the ladder is discrete: two targets may pick one backbone
          continue
        chosen.add(key)
        if scale == 'local' and d.tokens > LOCAL_MAX_EPOCHS * protocol.LOCAL_TRAIN_TOKENS:
          continue
        members.append(
            common.design_member(
                f'{kind}_C{budget:.2g}_M{d.M:.2e}',
                f'{kind}_C{budget:.2g}',
                d,
                scale,
                kind,
                needs_local_laws=('hparams',),
            )
        )
  return members
