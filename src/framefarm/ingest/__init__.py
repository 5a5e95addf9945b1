"""Inputs: one module per source kind; each turns its source into frames on the bus."""
