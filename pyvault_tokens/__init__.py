"""pyvault-tokens: self-refreshing API tokens in PostgreSQL, with a thin Python layer.

The public API, importable from here::

    from pyvault_tokens import TokenStore, TokenRefreshMiddleware, RefreshingTokenAuth

Migrating is ``pyvault_tokens.migrate.migrate(url)`` (a name here would be shadowed by
the submodule of the same name). The SQL calls themselves are ``pyvault_tokens.api``
(one function per ``auth.*`` function, each with an ``*_async`` twin). Names are
imported on first use, so ``import pyvault_tokens`` costs nothing and needs no extra:
the ASGI names need the ``asgi`` extra (Starlette), ``RefreshingTokenAuth`` the
``client`` extra (httpx).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvault_tokens.asgi import (
        EXPOSE_HEADERS,
        PyvaultAuth,
        PyvaultUser,
        TokenRefreshMiddleware,
        pyvault_auth,
        require_scope,
        requires_scope,
    )
    from pyvault_tokens.client import RefreshingTokenAuth, TokenNotFoundError
    from pyvault_tokens.display import is_well_formed_token, looks_like_token, token_prefix
    from pyvault_tokens.migrate import MigrateRefused, MigrateResult
    from pyvault_tokens.refresher import TokenRefreshService
    from pyvault_tokens.store import StoredToken, TokenStore, TokenStoreError

try:
    __version__: str = version("pyvault-tokens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "EXPOSE_HEADERS",
    "MigrateRefused",
    "MigrateResult",
    "PyvaultAuth",
    "PyvaultUser",
    "RefreshingTokenAuth",
    "StoredToken",
    "TokenNotFoundError",
    "TokenRefreshMiddleware",
    "TokenRefreshService",
    "TokenStore",
    "TokenStoreError",
    "__version__",
    "is_well_formed_token",
    "looks_like_token",
    "pyvault_auth",
    "require_scope",
    "requires_scope",
    "token_prefix",
]

# Each public name and the module that defines it (imported on first use).
_EXPORTS = {
    # migrations
    "MigrateResult": "pyvault_tokens.migrate",
    "MigrateRefused": "pyvault_tokens.migrate",
    # the token format, and what may be shown of a token
    "is_well_formed_token": "pyvault_tokens.display",
    "looks_like_token": "pyvault_tokens.display",
    "token_prefix": "pyvault_tokens.display",
    # the durable token store and the refresher service that keeps it fresh
    "StoredToken": "pyvault_tokens.store",
    "TokenStore": "pyvault_tokens.store",
    "TokenStoreError": "pyvault_tokens.store",
    "TokenRefreshService": "pyvault_tokens.refresher",
    # the ASGI middleware and its per-route checks (the asgi extra)
    "EXPOSE_HEADERS": "pyvault_tokens.asgi",
    "PyvaultAuth": "pyvault_tokens.asgi",
    "PyvaultUser": "pyvault_tokens.asgi",
    "TokenRefreshMiddleware": "pyvault_tokens.asgi",
    "pyvault_auth": "pyvault_tokens.asgi",
    "require_scope": "pyvault_tokens.asgi",
    "requires_scope": "pyvault_tokens.asgi",
    # the httpx client (the client extra)
    "RefreshingTokenAuth": "pyvault_tokens.client",
    "TokenNotFoundError": "pyvault_tokens.client",
}



def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyvault_tokens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
