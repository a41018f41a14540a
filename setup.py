"""ling-jax: Mixture-of-Experts scaling laws in JAX (arXiv 2507.17702, reproduced and extended)."""

import setuptools

setuptools.setup(
    name='ling-jax',
    version='0.1.0',
    description='Efficiency Leverage scaling laws for MoE language models: training and fitting.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(
        include=['ling_jax*', 'experiments*', 'configs*', 'fitting*', 'benchmarks*']
    ),
    package_data={'experiments': ['cost_model.json'], 'fitting': ['data/*.json']},
    install_requires=[
        # JAX 0.10.2 is the newest on Python 3.11; 0.11 needs Python >= 3.12. Both work.
        'jax>=0.10.2',
        'flax>=0.12.8',
        'optax>=0.2.8',
        'orbax-checkpoint>=0.12.8',
        'grain>=0.2.18',
        'einops>=0.8',
        'ml-collections>=1.1.0',
        'etils[epath]>=1.15.0',
        'absl-py>=2.1',
        'numpy>=2.0',
        'scipy>=1.14',
        'matplotlib>=3.8',  # the fits' figures
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'pytest-xdist>=3.6',  # pyproject.toml runs the suite on every core
            'tensorboardX>=2.6',
            'ipython',
            'tokamax>=0.0.12,<0.1',
            # Compiling for TPU slices and GPU nodes without them (tests/test_compile.py):
            # libtpu and the CUDA plugin of this JAX, without the CUDA libraries.
            'jax[tpu,cuda12-local]>=0.10.2',
            'gcsfs>=2025.1',  # tests/test_gcs.py: runs and fits on a local GCS emulator
            'gcp-storage-emulator>=2024.8',
        ],
        'gcs': ['gcsfs>=2025.1'],
        'tensorboard': ['tensorboardX>=2.6'],
        'lint': ['pyink==26.5.1', 'ruff==0.17.6'],  # what .ci/run checks
        'notebook': ['jupyter', 'nbconvert', 'ipykernel'],
        # The dropless grouped matmul of MaxText (config.moe.dispatch='tokamax'): Pallas kernels
        # for TPU (Mosaic) and GPU (Mosaic GPU, Triton), with an XLA fallback everywhere.
        # What a pod or a GPU node needs beside the base install: JAX's plugin for the chip (on a
        # CPU-only machine, what `python -m experiments.compile` needs to compile for it).
        # tokamax is bounded below 0.1: its TPU kernel's tiles are set through a private module.
        'tpu': ['jax[tpu]>=0.10.2', 'tokamax>=0.0.12,<0.1'],
        'gpu': ['jax[cuda12]>=0.10.2', 'tokamax>=0.0.12,<0.1'],
    },
)
