"""One module per local rung, all implementing ladder.rung.Rung."""
