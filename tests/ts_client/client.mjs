// A small TypeScript-SDK client: proves wellhead over streamable HTTP to an independent
// implementation. Usage: node tests/ts_client/client.mjs http://127.0.0.1:PORT/mcp
// Prints one JSON summary line on stdout; exits 1 with the reasons when an expectation fails.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = process.argv[2];
if (!url) {
  console.error("usage: client.mjs URL");
  process.exit(2);
}

const problems = [];
const expect = (ok, message) => {
  if (!ok) problems.push(message);
};
const text = (result) =>
  (result.content ?? [])
    .filter((block) => block.type === "text")
    .map((block) => block.text)
    .join("\n");

const client = new Client({ name: "wellhead-ts-client", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url));
const summary = { url };
try {
  await client.connect(transport);
  summary.server = client.getServerVersion();
  summary.protocolVersion = transport.protocolVersion ?? null;

  const { tools } = await client.listTools();
  summary.tools = tools.map((tool) => tool.name);
  for (const name of ["query", "list_tables", "describe_table"]) {
    expect(summary.tools.includes(name), `tools/list lacks ${name}`);
  }
  const query = tools.find((tool) => tool.name === "query");
  expect(query?.outputSchema?.type === "object", "query declares no object output schema");

  // A read: the SDK validates structuredContent against the declared output schema.
  const ok = await client.callTool({
    name: "query",
    arguments: { sql: "select 1 as one, 'two' as two" },
  });
  summary.select = { isError: ok.isError ?? false, structured: ok.structuredContent ?? null };
  expect(!ok.isError, `select 1 failed: ${text(ok)}`);
  const rows = ok.structuredContent?.rows;
  expect(Array.isArray(rows) && rows.length === 1, "select 1 did not return exactly one row");
  expect(JSON.stringify(rows?.[0]) === JSON.stringify([1, "two"]), `unexpected row ${JSON.stringify(rows?.[0])}`);

  // A write must come back as a tool error the model can read, not a protocol error.
  const bad = await client.callTool({ name: "query", arguments: { sql: "drop table orders" } });
  summary.drop = { isError: bad.isError ?? false, text: text(bad) };
  expect(bad.isError === true, "drop table was not refused as a tool error");
  expect(text(bad).length > 0, "the refusal carries no message");
} catch (error) {
  problems.push(`client error: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  await client.close().catch(() => {});
}

summary.problems = problems;
console.log(JSON.stringify(summary));
process.exit(problems.length ? 1 : 0);
