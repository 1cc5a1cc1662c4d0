"""Format module (being written): registers its Format on import."""
