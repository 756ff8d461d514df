def structured_triples():
    pass
