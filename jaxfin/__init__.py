"""jaxfin: a pure-JAX stack for adapting Llama-family models to finance."""

from jaxfin.model import Model, load_model

__version__ = "0.1.0"
__all__ = ["Model", "load_model"]
