"""The helpline wire protocol: message models, codec, and sans-I/O state machines.

Nothing in this package touches sockets, files, processes or an event loop; the agent and
the controller drive it.
"""

PROTOCOL_VERSION = 1
