"""Reinforcement learning: pure-torch algorithms, Ray actor roles, rollout engines, rewards."""
