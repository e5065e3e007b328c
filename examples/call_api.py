"""Call the example API with a token from a TokenStore, following its rotation.

    python examples/call_api.py [--url http://127.0.0.1:8000] [--store PATH] [--name demo]

Uses httpx with pyvault_tokens.client.RefreshingTokenAuth: when a response carries
X-New-Token the new token is written into the store before the next request. Tokens
are shown by prefix only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from pyvault_tokens.client import RefreshingTokenAuth
from pyvault_tokens.display import token_prefix
from pyvault_tokens.store import TokenStore

DEFAULT_STORE = Path(tempfile.gettempdir()) / "pyvault-demo" / "tokens.json"


def _show(label: str, response: httpx.Response) -> None:
    print(f"{label}: {response.status_code} {response.text}")
    if "x-new-token" in response.headers:
        print(f"  rotated ({response.headers.get('x-refresh-reason')}): new token "
              f"{token_prefix(response.headers['x-new-token'])} expires "
              f"{response.headers.get('x-token-expires')}, stored by the client")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--name", default="demo")
    args = parser.parse_args(argv)

    store = TokenStore(args.store)
    entry = store.get(args.name)
    if entry is None:
        print(f"no token named {args.name!r} in {store.path}; start examples/fastapi_app.py",
              file=sys.stderr)
        return 1
    print(f"using {token_prefix(entry.token)} from {store.path}")
    with httpx.Client(base_url=args.url, auth=RefreshingTokenAuth(store, args.name),
                      timeout=10) as client:
        _show("GET  /api/me", client.get("/api/me"))
        _show("POST /api/items", client.post("/api/items", json={"name": "widget"}))
        _show("GET  /api/me", client.get("/api/me"))
    print(f"the store now holds {token_prefix(store.get(args.name).token)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
