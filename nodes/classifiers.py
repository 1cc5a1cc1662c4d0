"""Node module (being written): registers its node types on import."""
