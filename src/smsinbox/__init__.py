"""smsinbox: a self-hostable SMS inbox server."""

__version__ = "0.1.0"
