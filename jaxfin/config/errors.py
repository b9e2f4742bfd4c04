"""The one exception for user mistakes in configs: every part of jaxfin raises it, so it lives at the bottom."""


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message says what and where."""
