"""Pydantic models of every message on the wire: the public intake and events, the internal saga."""
