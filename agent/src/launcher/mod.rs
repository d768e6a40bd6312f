//! What runs beside the governed program: `client` talks to the daemon (and verifies it is the
//! daemon), `seccomp` and `landlock` are the filters and the write ceiling `mcpguard exec`
//! applies before the program's first instruction, `mcp` is the MCP proxy of `exec --mcp`.
pub mod client;
pub mod landlock;
pub mod mcp;
pub mod seccomp;
