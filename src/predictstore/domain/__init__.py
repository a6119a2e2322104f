"""The domain: what predictstore stores and the rules its data obeys. Pure Python."""
