"""ling-jax: Ling-style Mixture-of-Experts language models in JAX for scaling-law research.

Importing the package imports nothing heavy: `ling_jax.flops` stays usable without JAX.
"""
