"""Evaluation: published benchmark metrics, Ray Data batch scoring, reports."""
