"""earthloop.active."""
