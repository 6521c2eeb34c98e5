"""Data pipeline: formats -> canonical frames -> prepared arrays -> splits -> windows -> batches."""
