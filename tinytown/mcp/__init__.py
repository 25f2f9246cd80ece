"""The Model Context Protocol face of the town: its tools, resources and prompts.

Transport-free: :mod:`.protocol` answers MCP's JSON-RPC methods, which townhall serves on
``/mcp`` (Streamable HTTP, :mod:`tinytown.api.mcp_http`) and ``tt mcp-stdio`` serves over stdio
through the official SDK (:mod:`.stdio`). Every tool is an operation of :mod:`tinytown.ops`, so a
tool and its REST route run the same code, need the same scope and fail with the same sentence.
"""
