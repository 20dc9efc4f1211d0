"""Model catalog with prices, usage ledger, cost and budgets."""
