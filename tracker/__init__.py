"""Tracker: a self-hosted task tracker with live countdown timers, event-sourced."""

__version__ = "0.1.0"
