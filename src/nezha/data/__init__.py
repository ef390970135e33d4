"""Data pipelines: pretraining instances, task readers, collation."""
