"""Fitting the paper's scaling laws from run results. Never imports JAX."""
