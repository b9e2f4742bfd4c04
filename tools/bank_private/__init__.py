"""A fictional bank's private documents for the finance-brain recipe (configs/recipes/finance_brain.yaml)."""
