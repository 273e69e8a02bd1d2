"""A run's config: its fields declared once, the schema, parsing."""
