"""FastMCP tool servers for the executor. Each runs alone: `python -m memento.mcp_servers.NAME`."""
