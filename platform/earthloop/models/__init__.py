"""earthloop.models."""
