"""Manifest tooling for a workstation or CI: render, check, deploy with waxctl."""
