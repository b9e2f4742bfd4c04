"""Benchmarks with JSON results: `jaxfin bench train` (train-step throughput, MFU, peak memory, optionally side by
side with transformers + torch). Kept light to import: JAX and torch load only when a benchmark runs."""

from jaxfin.bench.train import flops_params, flops_per_token, param_count, peak_tflops

__all__ = ["flops_params", "flops_per_token", "param_count", "peak_tflops"]
