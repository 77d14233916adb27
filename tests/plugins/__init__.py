"""Test plugins loaded by `wellhead serve` subprocesses (`plugins: [tests.plugins.<name>]`)."""
