"""The helpline agent: the small program on the customer's machine."""

__version__ = "0.1.0"
