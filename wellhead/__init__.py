"""wellhead: a production MCP server for safe, metered, observable access to your data."""

__version__ = "0.1.0"
