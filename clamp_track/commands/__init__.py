"""Sub-commands of the clamp-track CLI, one module each."""
