"""Fitting the paper's scaling laws from run results. Never imports JAX."""

import os

# A fit is thousands of L-BFGS-B problems of 2-8 parameters, where OpenBLAS threads only add
# synchronisation (one thread is faster, more so beside a training run). It takes effect when
# NumPy loads after this; a setting of yours wins.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
