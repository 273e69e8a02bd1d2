"""A step's FLOPs and kernels, and the device ops of a profile."""
