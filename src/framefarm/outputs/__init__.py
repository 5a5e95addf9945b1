"""Outputs: one module per destination kind; each delivers results and frames, then releases the frame."""
