"""The Experiments panel: which channels matter, residual-block lesions, the equivariance probe."""
