"""Crane registry and life cycle with an audit trail."""
