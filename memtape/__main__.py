"""``python -m memtape`` runs the CLI."""
from memtape.cli import main

main()
