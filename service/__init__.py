"""Everything about running graphs: event and packet types, wire codec, runtime, daemon, CLI."""
