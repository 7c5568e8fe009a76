"""Kindler's database backends."""
