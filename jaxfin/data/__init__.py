"""Data: sources, filters and dedup, token cache, packing, mixtures and the Grain loader."""


class DataError(ValueError):
    """Bad input data or data settings; the message names the file (and line) or the setting."""
