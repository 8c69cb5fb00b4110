"""Loads the specguard pytest plugin (options, cells, server fixtures) for this suite."""

pytest_plugins = ["specguard.plugin.hooks"]
