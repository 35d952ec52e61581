"""AutoML jobs (docs/automl.md): an Optuna search over the platform's trainer families within a time budget,
each trial in a process of its own, the best configuration refit through the training child."""
