"""earthloop.finetune."""
