"""A trained model run on pairs, its outputs decoded, measured, drawn and reported."""
