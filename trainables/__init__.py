"""What one trial runs: plain functions of a config dict (no pipelines, no Tune machinery)."""
