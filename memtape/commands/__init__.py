"""One module per ``memtape`` subcommand, each exposing a click command named ``command``."""
