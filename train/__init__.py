"""Training: data, degradations, losses, metrics and the training loop (arrives with the Train issue)."""
