"""One reader per published preference format, each yielding canonical pair dicts."""
