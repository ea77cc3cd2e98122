"""Tests of the controller: store, server, CLI."""
