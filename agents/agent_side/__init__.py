"""The agent side: what runs inside a worker's sandbox, apart from the server.

- `mcp_client` — the httpx MCP client (sync and async, retries, idempotency keys);
- `mcp_tools` — the typed OpenHands tools, one per MCP tool;
- `sandbox_handle`, `daytona_workspace`, `daytona_executor` — a sandbox as OpenHands' workspace and terminal;
- `scripted_brain`, `worker_runtime` — the worker loop (a real LLM when configured, else a scripted playbook).

This package imports no Django and no app of the server: a sandbox has only httpx and the OpenHands SDK.
The import-linter contract in `pyproject.toml` keeps it so; the server's launcher imports it, never the
other way round.
"""
