"""Facewire client."""
