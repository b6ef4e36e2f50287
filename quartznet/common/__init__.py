"""Leaf utilities every layer may use: `.nemo` archive I/O and error counting."""
