"""One module per local rung, all implementing core.rung.Rung."""
