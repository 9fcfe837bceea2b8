"""Plots of training progress and network activity."""
