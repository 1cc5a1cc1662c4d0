"""Built-in graph files (TOML): ``default`` (demo), ``gesture`` (the bundled model's graph)."""
