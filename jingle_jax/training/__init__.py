"""The compiled step, its losses and optimisers, the run directory and checkpoints, the run's logs."""
