"""earthloop.synth."""
