"""The emulated ``exportctl`` and ``featurectl``: the contract's reference implementation."""
