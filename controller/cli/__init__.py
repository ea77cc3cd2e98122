"""The ``helpline`` command: server, admin and technician CLI."""
