"""The helpline controller: server, store, tickets, audit and the technician CLI."""
