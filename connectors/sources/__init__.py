"""Built-in source connectors; importing this package registers their URI schemes."""
from memtape.connectors.sources import jsonl  # noqa: F401
