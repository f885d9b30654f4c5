"""earthloop.pretrain."""
