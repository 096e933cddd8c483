"""Offline tools over recorded sequences: per-frame eye and lip contours, personalised from annotated frames."""
