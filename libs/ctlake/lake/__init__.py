"""Table schemas (one source of truth), Delta read/write helpers."""
