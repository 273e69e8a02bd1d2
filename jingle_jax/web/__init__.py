"""The local web app over a trained model (`python -m jingle_jax.serve`)."""
