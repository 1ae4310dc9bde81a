"""Entry points (python -m pipelines.X) and the machinery that connects spaces and trainables to Ray Tune."""
