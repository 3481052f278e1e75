// Drives the official MCP TypeScript SDK client against an OmoiOS /mcp/ endpoint and prints one JSON
// report on stdout (tests/test_mcp_conformance.py checks it). Usage:
//   node conformance.mjs main <url> <token> <ticket_id>     initialize, list, calls, errors, a 401
//   node conformance.mjs limited <url> <token>              pings until the server's 429
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, url, token, ticketId] = process.argv.slice(2);

function connect(bearer) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: bearer ? { Authorization: `Bearer ${bearer}` } : {} },
  });
  const errors = [];
  transport.onerror = (error) => errors.push(String(error?.message ?? error));
  const client = new Client({ name: "omoios-conformance", version: "1.0.0" });
  return { client, transport, errors };
}

function failure(error) {
  return { name: error?.constructor?.name, code: error?.code, message: String(error?.message ?? error) };
}

const report = {};
if (mode === "limited") {
  const limited = connect(token);
  report.pings = 0;
  try {
    await limited.client.connect(limited.transport);
    for (let index = 0; index < 10; index += 1) {
      await limited.client.ping();
      report.pings += 1;
    }
    report.rateLimited = { ok: true };
  } catch (error) {
    report.rateLimited = failure(error);
  }
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(0);
}
const main = connect(token);
await main.client.connect(main.transport);
report.serverVersion = main.client.getServerVersion();
report.protocolVersion = main.transport.protocolVersion ?? null;
report.capabilities = main.client.getServerCapabilities();
report.instructions = main.client.getInstructions();
const listed = await main.client.listTools();
report.toolNames = listed.tools.map((tool) => tool.name);
report.getTicketSchema = listed.tools.find((tool) => tool.name === "get_ticket")?.inputSchema ?? null;
report.ping = await main.client.ping();
report.getTicket = await main.client.callTool({ name: "get_ticket", arguments: { ticket_id: ticketId } });
report.toolError = await main.client.callTool({ name: "get_ticket", arguments: { ticket_id: "TKT-999999" } });
report.invalidArguments = await main.client.callTool({ name: "get_ticket", arguments: { ticket: ticketId } });
report.created = await main.client.callTool({
  name: "create_ticket",
  arguments: { workflow_id: "test-flow", title: "Filed by the TypeScript SDK", description: "Created through the official TS client." },
});
try {
  await main.client.request({ method: "resources/list", params: {} }, (await import("@modelcontextprotocol/sdk/types.js")).ListResourcesResultSchema);
  report.unknownMethod = { ok: true };
} catch (error) {
  report.unknownMethod = failure(error);
}
await main.client.close();
report.transportErrors = main.errors;

const anonymous = connect("omoi_not-a-real-token");
try {
  await anonymous.client.connect(anonymous.transport);
  report.unauthorized = { ok: true };
} catch (error) {
  report.unauthorized = failure(error);
}

process.stdout.write(JSON.stringify(report) + "\n");
process.exit(0);
