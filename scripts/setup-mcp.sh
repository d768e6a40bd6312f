#!/usr/bin/env bash
# Idempotent setup of the real MCP software the MCP tests drive (nothing here is ours):
#   .mcp-venv/   python venv (Debian's /usr/bin/python3) with the official `mcp` SDK (client)
#                and `mcp-server-git`, `mcp-server-fetch`, `pyjwt[crypto]`, `spiffe` from PyPI
#   .mcp-node/   @modelcontextprotocol/server-filesystem from npm
# Both directories are gitignored. Quick (no network) when everything is already installed.
# Override versions with MCP_VERSION / MCP_SERVER_GIT_VERSION / MCP_SERVER_FETCH_VERSION / MCP_FS_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf 'setup-mcp: %s\n' "$*" >&2; }
# One setup at a time (test binaries may call this concurrently); the others wait, then find
# everything installed.
exec 9>"$root/.mcp-setup.lock"
flock 9

MCP_VERSION=${MCP_VERSION:-2.3.0}
MCP_SERVER_GIT_VERSION=${MCP_SERVER_GIT_VERSION:-2026.10.19}
MCP_SERVER_FETCH_VERSION=${MCP_SERVER_FETCH_VERSION:-2026.10.24}
MCP_FS_VERSION=${MCP_FS_VERSION:-2026.8.31}
# The identity tests verify the daemon's tokens with a JWT library nobody here wrote.
PYJWT_VERSION=${PYJWT_VERSION:-2.15.1}
SPIFFE_VERSION=${SPIFFE_VERSION:-0.3.2}

venv=$root/.mcp-venv
stamp=$venv/.mcpguard-installed
want="mcp==$MCP_VERSION mcp-server-git==$MCP_SERVER_GIT_VERSION mcp-server-fetch==$MCP_SERVER_FETCH_VERSION pyjwt[crypto]==$PYJWT_VERSION spiffe==$SPIFFE_VERSION"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  if ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "creating $venv ($want)"
  [[ -x $venv/bin/python3 ]] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check $want
  echo "$want" >"$stamp"
fi

node_dir=$root/.mcp-node
fs_pkg=$node_dir/node_modules/@modelcontextprotocol/server-filesystem
if [[ ! -f $fs_pkg/package.json ]] || ! grep -q "\"version\": \"$MCP_FS_VERSION\"" "$fs_pkg/package.json"; then
  command -v npm >/dev/null || {
    log "installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  }
  log "installing @modelcontextprotocol/server-filesystem@$MCP_FS_VERSION into $node_dir"
  mkdir -p "$node_dir"
  [[ -f $node_dir/package.json ]] || echo '{"private":true}' >"$node_dir/package.json"
  npm install --prefix "$node_dir" --no-audit --no-fund --silent "@modelcontextprotocol/server-filesystem@$MCP_FS_VERSION"
fi
log "ok ($venv, $node_dir)"
