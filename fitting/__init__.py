"""Fitting the paper's scaling laws from run results. Never imports JAX."""

import os

# A fit is thousands of L-BFGS-B problems of 2-8 parameters, where OpenBLAS threads only add
# synchronisation: `python -m fitting.fit` ran 2x faster on one thread on a 2-core machine, and
# more beside a training run. It takes effect when NumPy loads after this; a setting of yours wins.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
