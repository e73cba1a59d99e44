"""forge-ray."""
