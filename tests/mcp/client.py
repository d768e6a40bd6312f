"""Drives an MCP server over stdio with the official Python `mcp` SDK client.

Usage: client.py PLAN.json  (or `-` for stdin). The plan:

    {"command": "/path/mcpguard", "args": ["exec", ...], "env": {...}, "timeout": 30,
     "steps": [{"op": "list"},
               {"op": "call", "name": "git_status", "arguments": {"repo_path": "/r"}},
               {"op": "parallel", "calls": [{"name": "slow"}, {"name": "slow"}]},
               {"op": "shell", "cmd": "cp a b"}]}

Prints one JSON object: the server's initialize result, one entry per step, and every
message the client sent (method and JSON-RPC id, recorded at the client's write stream, so
tests can match audit lines against the request ids the client really used).
"""

import json
import subprocess
import sys
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


class RecordingWriter:
    """Wraps the transport's write stream and records each outgoing JSON-RPC message."""

    def __init__(self, inner: Any, sent: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._sent = sent

    async def send(self, item: Any) -> None:
        msg = item.message
        data = msg.model_dump(by_alias=True, mode="json", exclude_none=True) if hasattr(msg, "model_dump") else msg
        params = data.get("params") or {}
        self._sent.append({"id": data.get("id"), "method": data.get("method"), "name": params.get("name")})
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def close(self) -> None:
        self._inner.close()

    async def __aenter__(self) -> "RecordingWriter":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    params = StdioServerParameters(command=plan["command"], args=plan.get("args", []), env=plan.get("env"))
    timeout = float(plan.get("timeout", 30))
    out: dict[str, Any] = {"steps": [], "sent": []}
    errlog = open(plan["errlog"], "a") if plan.get("errlog") else sys.stderr
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, RecordingWriter(write, out["sent"]), read_timeout_seconds=timeout) as s:
            init = await s.initialize()
            out["initialize"] = dump(init)
            for step in plan["steps"]:
                op = step["op"]
                try:
                    if op == "list":
                        r = await s.list_tools()
                        res: dict[str, Any] = {"tools": [t.name for t in r.tools]}
                    elif op == "call":
                        r = await s.call_tool(step["name"], step.get("arguments", {}))
                        res = {"result": dump(r)}
                    elif op == "parallel":
                        results: list[Any] = [None] * len(step["calls"])

                        async def one(i: int, c: dict[str, Any]) -> None:
                            r = await s.call_tool(c["name"], c.get("arguments", {}))
                            results[i] = dump(r)

                        async with anyio.create_task_group() as tg:
                            for i, c in enumerate(step["calls"]):
                                tg.start_soon(one, i, c)
                        res = {"results": results}
                    elif op == "shell":
                        p = subprocess.run(step["cmd"], shell=True, capture_output=True, text=True)
                        res = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
                    else:
                        raise ValueError(f"unknown op {op}")
                except Exception as e:  # noqa: BLE001 - reported to the test, which asserts on it
                    err = getattr(e, "error", None)
                    if err is not None and hasattr(err, "code"):
                        res = {"error": {"code": err.code, "message": err.message, "data": getattr(err, "data", None)}}
                    else:
                        res = {"exception": f"{type(e).__name__}: {e}"}
                res["op"] = op
                out["steps"].append(res)
    return out


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    plan = json.load(sys.stdin if src == "-" else open(src))
    try:
        out = anyio.run(run, plan)
    except BaseException as e:  # noqa: BLE001 - the test asserts on what happened
        out = {"fatal": f"{type(e).__name__}: {e!r}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
