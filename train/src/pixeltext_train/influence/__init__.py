"""Training-data influence: record training dynamics, simulate them (GPTfluence), compare baselines."""
