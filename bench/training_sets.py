# TEMP shim (lead), replaced by helper C's module
def matching_training_set(ds): return None
def find_training_spec(name): return None
