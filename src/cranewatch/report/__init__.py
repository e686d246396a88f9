"""Renderers of one finished result: text, JSON lines, HTML."""
