"""Training: TrainState, optimizer/schedule/EMA, sharded steps, checkpoints, the loop."""
