"""Running the training: the parts built from a configuration, checkpoints, run logs, distributed training,
progress bars and the whole-lab pipeline."""
