"""Plain, typed Python and torch: data, models, training, metrics. Nothing here imports ZenML."""
