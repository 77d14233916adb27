"""Fixtures for the official MCP conformance suite, loaded as an ordinary plugin.

`@modelcontextprotocol/conformance@0.1.16` drives a server through fixed names
(`test_simple_text`, `test://static-text`, `test_simple_prompt`, ...). Loading
this module with `wellhead serve --plugin wellhead.plugins.conformance` proves
the chassis (transport, guards, sessions) speaks MCP correctly, through the same
path a team's own plugin takes. Every fixture is async and offline.

Two pieces are server-level rather than component-level, so a mounted child
server cannot provide them to its parent: argument completion and
`resources/subscribe`. `register()` therefore mounts `server` and also installs
those two on the host; `server` carries them too so it runs standalone.
"""

from __future__ import annotations

import base64
import json
import struct
import warnings
import weakref
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.prompts import Message, PromptResult
from fastmcp.tools import Tool, ToolResult
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

__all__ = ["register", "server"]

WATCHED_URI = "test://watched-resource"
COMPLETION_PROMPT = "test_prompt_with_arguments"
_STEP_SECONDS = 0.05  # the suite asks for ~50 ms between notifications


def _png_1x1_red() -> bytes:
    """A valid 1x1 red PNG, built rather than stored (no binary blobs in the repo)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte + one red pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _wav_silence(samples: int = 8) -> bytes:
    """A valid mono 8 kHz 16-bit PCM WAV of a few silent samples."""
    data = b"\x00\x00" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


PNG_B64 = base64.b64encode(_png_1x1_red()).decode()
WAV_B64 = base64.b64encode(_wav_silence()).decode()


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")


def _embedded(uri: str, text: str, mime_type: str = "text/plain") -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource",
        resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=text),
    )


def _require_capability(ctx: Context, capability: types.ClientCapabilities, what: str) -> None:
    """Fail as a tool error, not a hang, when the client cannot answer a server request."""
    if not ctx.session.check_client_capability(capability):
        raise ToolError(f"The client did not declare the {what} capability; cannot run {what}.")


# ---------------------------------------------------------------------------
# Tools


async def test_simple_text() -> ToolResult:
    """Return one text block (scenario tools-call-simple-text)."""
    return ToolResult(content=[_text("This is a simple text response for testing.")])


async def test_image_content() -> ToolResult:
    """Return a 1x1 red PNG as image content (scenario tools-call-image)."""
    return ToolResult(content=[_image()])


async def test_audio_content() -> ToolResult:
    """Return a short silent WAV as audio content (scenario tools-call-audio)."""
    return ToolResult(
        content=[types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]
    )


async def test_embedded_resource() -> ToolResult:
    """Return an embedded text resource (scenario tools-call-embedded-resource)."""
    return ToolResult(
        content=[_embedded("test://embedded-resource", "This is an embedded resource content.")]
    )


async def test_multiple_content_types() -> ToolResult:
    """Return text, image and an embedded resource together (tools-call-mixed-content)."""
    payload = json.dumps({"test": "data", "value": 123})
    return ToolResult(
        content=[
            _text("Multiple content types test:"),
            _image(),
            _embedded("test://mixed-content-resource", payload, "application/json"),
        ]
    )


async def test_tool_with_logging(ctx: Context) -> ToolResult:
    """Send three info log notifications ~50 ms apart (tools-call-with-logging)."""
    await ctx.log("Tool execution started", level="info")
    await anyio.sleep(_STEP_SECONDS)
    await ctx.log("Tool processing data", level="info")
    await anyio.sleep(_STEP_SECONDS)
    await ctx.log("Tool execution completed", level="info")
    return ToolResult(content=[_text("Tool with logging executed successfully")])


async def test_tool_with_progress(ctx: Context) -> ToolResult:
    """Report progress 0, 50, 100 of 100 ~50 ms apart (tools-call-with-progress)."""
    for done in (0, 50, 100):
        if done:
            await anyio.sleep(_STEP_SECONDS)
        await ctx.report_progress(progress=done, total=100)
    return ToolResult(content=[_text("Tool with progress executed successfully")])


async def test_error_handling() -> ToolResult:
    """Always fail, as a tool error the model can read (tools-call-error)."""
    raise ToolError("This tool intentionally returns an error for testing")


async def test_sampling(prompt: str, ctx: Context) -> ToolResult:
    """Ask the client's LLM to answer `prompt` via sampling/createMessage."""
    _require_capability(
        ctx, types.ClientCapabilities(sampling=types.SamplingCapability()), "sampling"
    )
    message = types.SamplingMessage(role="user", content=_text(prompt))
    with warnings.catch_warnings():
        # Deprecated only in the 2026-07-28 era; the suite speaks 2025-11-25.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        pending = ctx.session.create_message(
            [message], max_tokens=100, related_request_id=ctx.request_id
        )
    result = await pending
    content = result.content
    answer = content.text if isinstance(content, types.TextContent) else str(content)
    return ToolResult(content=[_text(f"LLM response: {answer}")])


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
    _require_capability(
        ctx, types.ClientCapabilities(elicitation=types.ElicitationCapability()), "elicitation"
    )
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


async def test_elicitation(message: str, ctx: Context) -> ToolResult:
    """Ask the user for a username and email via elicitation/create."""
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    result = await _elicit(ctx, message, schema)
    return ToolResult(
        content=[_text(f"User response: action={result.action}, content={result.content}")]
    )


async def test_elicitation_sep1034_defaults(ctx: Context) -> ToolResult:
    """Elicit with a default on every primitive type (SEP-1034)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Your name", "default": "John Doe"},
            "age": {"type": "integer", "description": "Your age", "default": 30},
            "score": {"type": "number", "description": "Your score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "Account status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verified", "default": True},
        },
    }
    result = await _elicit(ctx, "Please review and update the form fields", schema)
    return ToolResult(
        content=[
            _text(
                f"Elicitation completed: action={result.action}, "
                f"content={json.dumps(result.content)}"
            )
        ]
    )


async def test_elicitation_sep1330_enums(ctx: Context) -> ToolResult:
    """Elicit with all five enum shapes: (un)titled single/multi-select and legacy enumNames."""
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Untitled single-select",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "description": "Titled single-select",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            "legacyEnum": {
                "type": "string",
                "description": "Legacy titled enum",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "description": "Untitled multi-select",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            "titledMulti": {
                "type": "array",
                "description": "Titled multi-select",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
    }
    result = await _elicit(ctx, "Please pick from the options", schema)
    return ToolResult(
        content=[
            _text(
                f"Elicitation completed: action={result.action}, "
                f"content={json.dumps(result.content)}"
            )
        ]
    )


# JSON Schema 2020-12 keywords must survive tools/list untouched (pending scenario
# json-schema-2020-12). The tool takes its schema verbatim, not from a signature.
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


class VerbatimSchemaTool(Tool):
    """A tool advertised with its input schema exactly as written (json-schema-2020-12).

    Deriving the schema from a signature would lose `$schema` and `$defs`; the host must
    also not dereference schemas (`FastMCP(dereference_schemas=False)`) for them to survive.
    """

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(content=[_text(json.dumps(arguments, sort_keys=True))])


async def test_reconnection(ctx: Context) -> ToolResult:
    """Close the response stream mid-call so the client resumes (server-sse-polling, SEP-1699).

    Needs streamable HTTP with an event store; elsewhere closing is a no-op and the call
    simply completes.
    """
    await ctx.close_sse_stream()
    await anyio.sleep(_STEP_SECONDS * 2)
    return ToolResult(content=[_text("Reconnection test completed successfully")])


_TOOLS: tuple[Callable[..., Awaitable[ToolResult]], ...] = (
    test_simple_text,
    test_image_content,
    test_audio_content,
    test_embedded_resource,
    test_multiple_content_types,
    test_tool_with_logging,
    test_tool_with_progress,
    test_error_handling,
    test_sampling,
    test_elicitation,
    test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums,
    test_reconnection,
)

# ---------------------------------------------------------------------------
# Resources, template and prompts


async def static_text() -> str:
    """A fixed text resource (resources-read-text)."""
    return "This is the content of the static text resource."


async def static_binary() -> bytes:
    """A fixed 1x1 PNG served as a blob (resources-read-binary)."""
    return base64.b64decode(PNG_B64)


async def watched_resource() -> str:
    """A resource clients may subscribe to (resources-subscribe / -unsubscribe)."""
    return "Watched resource content"


async def template_data(id: str) -> str:  # noqa: A002 - the URI template names it `id`
    """Per-id JSON data from the template test://template/{id}/data."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


async def test_simple_prompt() -> PromptResult:
    """A prompt with no arguments (prompts-get-simple)."""
    return PromptResult([Message("This is a simple prompt for testing.")])


async def test_prompt_with_arguments(arg1: str, arg2: str) -> PromptResult:
    """A prompt that substitutes two required arguments (prompts-get-with-args)."""
    return PromptResult([Message(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")])


async def test_prompt_with_embedded_resource(resourceUri: str) -> PromptResult:  # noqa: N803
    """A prompt that embeds the resource named by `resourceUri`."""
    return PromptResult(
        [
            Message(_embedded(resourceUri, "Embedded resource content for testing.")),
            Message("Please process the embedded resource above."),
        ]
    )


async def test_prompt_with_image() -> PromptResult:
    """A prompt carrying an image (prompts-get-with-image)."""
    return PromptResult([Message(_image()), Message("Please analyze the image above.")])


# ---------------------------------------------------------------------------
# Server-level handlers: completion and subscriptions

_COMPLETIONS = {
    "arg1": ["paris", "park", "party", "test", "testValue1"],
    "arg2": ["world", "wonder", "testValue2"],
}

CompletionHandler = Callable[..., Any]


def _completion_handler(fallback: CompletionHandler | None) -> CompletionHandler:
    """Complete `test_prompt_with_arguments` args by prefix; hand anything else on."""

    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> Any:
        if isinstance(ref, types.PromptReference) and ref.name == COMPLETION_PROMPT:
            options = _COMPLETIONS.get(argument.name, [])
            return [o for o in options if o.startswith(argument.value)]
        if fallback is None:
            return None
        result = fallback(ref, argument, context)
        return await result if isinstance(result, Awaitable) else result

    return complete


class Subscriptions:
    """Resource URIs each connection subscribed to; dropped with the connection.

    Keyed weakly by the SDK connection object so nothing outlives a session and
    nothing is shared between sessions.
    """

    def __init__(self, host: FastMCP) -> None:
        self._host = weakref.ref(host)
        self._by_connection: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(ctx: ServerRequestContext) -> Any:
        # ServerSession is a per-request proxy; its connection is what lives on.
        return getattr(ctx.session, "_connection", ctx.session)

    async def _known(self, uri: str) -> bool:
        host = self._host()
        return host is not None and await host.get_resource(uri) is not None

    def uris(self, ctx: ServerRequestContext) -> frozenset[str]:
        return frozenset(self._by_connection.get(self._key(ctx), set()))

    async def subscribe(
        self, ctx: ServerRequestContext, params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        uri = str(params.uri)
        if not await self._known(uri):
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource {uri!r}: cannot subscribe.")
        self._by_connection.setdefault(self._key(ctx), set()).add(uri)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self._by_connection.get(self._key(ctx), set()).discard(str(params.uri))
        return types.EmptyResult()


def _install_server_handlers(mcp: FastMCP) -> Subscriptions:
    """Give `mcp` completion for the fixture prompt and resources/(un)subscribe."""
    previous = getattr(mcp, "_completion_handler", None)
    mcp.add_completion_handler(_completion_handler(previous))
    subscriptions = Subscriptions(mcp)
    low = mcp._mcp_server
    low.add_request_handler(
        "resources/subscribe", types.SubscribeRequestParams, subscriptions.subscribe
    )
    low.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, subscriptions.unsubscribe
    )
    return subscriptions


def _add_components(mcp: FastMCP) -> None:
    for fn in _TOOLS:
        mcp.tool(fn)
    mcp.add_tool(
        VerbatimSchemaTool(
            name="json_schema_2020_12_tool",
            description="Tool with JSON Schema 2020-12 features",
            parameters=JSON_SCHEMA_2020_12,
        )
    )
    mcp.resource("test://static-text", name="static-text", mime_type="text/plain")(static_text)
    mcp.resource("test://static-binary", name="static-binary", mime_type="image/png")(static_binary)
    mcp.resource(WATCHED_URI, name="watched-resource", mime_type="text/plain")(watched_resource)
    mcp.resource("test://template/{id}/data", name="template-data", mime_type="application/json")(
        template_data
    )
    for prompt in (
        test_simple_prompt,
        test_prompt_with_arguments,
        test_prompt_with_embedded_resource,
        test_prompt_with_image,
    ):
        mcp.prompt(prompt)


def build_server() -> FastMCP:
    """A standalone fixtures server: components plus the server-level handlers."""
    mcp = FastMCP("conformance-fixtures", dereference_schemas=False)
    _add_components(mcp)
    _install_server_handlers(mcp)
    return mcp


server: FastMCP = build_server()


def register(mcp: FastMCP) -> None:
    """Mount the fixtures onto `mcp` and give it completion and subscriptions."""
    mcp.mount(server)
    _install_server_handlers(mcp)
