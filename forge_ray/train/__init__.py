"""Per-worker training loops (one step loop for every trainer) and their Ray Train driver."""
