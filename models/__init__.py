"""Converted models."""
