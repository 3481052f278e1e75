"""MCP tools of this app (see omoi_site.mcp_endpoint)."""
