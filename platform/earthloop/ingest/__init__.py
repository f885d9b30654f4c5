"""earthloop.ingest."""
