"""memtape: stream chats, mail, meetings and health records into long-term memory tables, and recall them.

The Python API of ``memtape recall`` is ``from memtape.recall import recall``.
Nothing is imported here, so ``import memtape`` (and every CLI command) stays
free of Lance and the models until a command needs them.
"""
