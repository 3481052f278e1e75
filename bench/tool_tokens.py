"""Token cost of OmoiOS's tool schemas: the server's whole tools/list (every MCP tool, as any MCP client
receives it; budget 5,000 cl100k tokens) and the 27 typed tools exactly as an OpenHands agent sends them.

    .venv/bin/python bench/tool_tokens.py [--json]

Counts `tools=[…]` of a chat-completions request: each tool is `ToolDefinition.to_openai_tool(
add_security_risk_prediction=True)` (what `Agent.step` sends, incl. the SDK's own `summary` and
`security_risk` properties), JSON-encoded, tokenised with tiktoken cl100k_base and o200k_base (the BPE
files litellm ships, so no network). Providers wrap tools in their own framing, so treat the figures as
the schema's share of the prompt, comparable run to run. Budget: < 6,000 tokens for all 27.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BUDGET = 6000
ROOT = Path(__file__).resolve().parent.parent


def _encodings():
    import importlib.util

    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec and spec.submodule_search_locations:
            bundled = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
            os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    import tiktoken

    return {name: tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")}


def tool_params() -> list[dict]:
    """The tool params an Agent sends, for the 27 tools (no server needed: the client is never used)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
    sys.path.insert(0, str(ROOT))
    from agents.agent_side.mcp_client import MCPClient
    from agents.agent_side.mcp_tools import mcp_tool_definitions

    client = MCPClient("http://127.0.0.1:9/mcp/", "unused")
    try:
        return [tool.to_openai_tool(add_security_risk_prediction=True) for tool in mcp_tool_definitions(client)]
    finally:
        client.close()


SERVER_BUDGET = 5000


def server_tools_list() -> dict:
    """The tools/list result our server sends (the bytes built once per process), tokenised."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from omoi_site.mcp_transport import tools_list_result

    text = tools_list_result().decode()
    encodings = _encodings()
    return {
        "count": len(json.loads(text)["tools"]),
        **{name: len(encoding.encode(text)) for name, encoding in encodings.items()},
        "budget": SERVER_BUDGET,
    }


def measure() -> dict:
    encodings = _encodings()
    rows = []
    for param in tool_params():
        text = json.dumps(param, separators=(",", ":"), ensure_ascii=False)
        properties = param["function"]["parameters"].get("properties", {})
        sdk_part = json.dumps({k: v for k, v in properties.items() if k in ("summary", "security_risk")})
        rows.append(
            {
                "name": param["function"]["name"],
                **{name: len(encoding.encode(text)) for name, encoding in encodings.items()},
                "sdk_added_cl100k": len(encodings["cl100k_base"].encode(sdk_part)) if sdk_part != "{}" else 0,
            }
        )
    totals = {name: sum(row[name] for row in rows) for name in encodings}
    totals["sdk_added_cl100k"] = sum(row["sdk_added_cl100k"] for row in rows)
    return {"tools": rows, "total": totals, "count": len(rows), "budget": BUDGET}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = measure()
    server = server_tools_list()
    result["server_tools_list"] = server
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'tool':34} {'cl100k':>7} {'o200k':>7} {'of which SDK-added':>19}")
        for row in result["tools"]:
            print(f"{row['name']:34} {row['cl100k_base']:>7} {row['o200k_base']:>7} {row['sdk_added_cl100k']:>19}")
        total = result["total"]
        print(
            f"{'TOTAL (' + str(result['count']) + ' tools)':34} {total['cl100k_base']:>7} {total['o200k_base']:>7} "
            f"{total['sdk_added_cl100k']:>19}"
        )
        print(f"budget {BUDGET}: {'OK' if max(total['cl100k_base'], total['o200k_base']) < BUDGET else 'OVER'}")
        print(
            f"\nserver tools/list ({server['count']} tools, as sent): cl100k {server['cl100k_base']}, "
            f"o200k {server['o200k_base']}; budget {SERVER_BUDGET} cl100k: "
            f"{'OK' if server['cl100k_base'] <= SERVER_BUDGET else 'OVER'}"
        )
    typed_ok = max(result["total"]["cl100k_base"], result["total"]["o200k_base"]) < BUDGET
    return 0 if typed_ok and server["cl100k_base"] <= SERVER_BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
