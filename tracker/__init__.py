"""Facewire tracker."""
