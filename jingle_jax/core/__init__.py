"""What every stage stands on: files written whole, the device mesh, the compilation cache, Orbax kept quiet."""
