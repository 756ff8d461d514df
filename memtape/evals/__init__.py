"""One module per ``memtape eval`` subcommand, each exposing a click command named ``command``."""
