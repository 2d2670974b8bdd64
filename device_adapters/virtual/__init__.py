"""Simulated patients and devices for the demo and the tests (clearly labelled as simulated)."""
