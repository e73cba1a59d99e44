"""Knowledge infusion: augment an organisation's documents and records so a model absorbs their facts."""
