class EntityResolver:
    pass
