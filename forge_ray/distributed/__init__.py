"""Distributed plumbing: DeepSpeed configuration, Ray actor groups, weight sync."""
