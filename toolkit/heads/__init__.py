"""Heads: small task-specific layers that sit on a backbone's features."""
