"""earthloop.observe."""
