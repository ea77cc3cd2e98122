"""The I/O both drivers share: the pinned TLS client of the agent and of the technician.

``protocol/`` decides whether a certificate is the pinned one; this package opens the
connections that ask it. The agent carries it, so it imports nothing but ``protocol/``.
"""
