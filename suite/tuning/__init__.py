"""Tuning: Optuna studies per (problem, variant, batch size), trials in populations, reports."""
