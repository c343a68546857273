"""Typed schemas for every config group, checked once before any work starts."""
