"""A character-level GPT with switchable components, its data pipeline and training loop."""
