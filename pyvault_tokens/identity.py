"""What a request the middleware validated carries: ``PyvaultAuth`` in
``scope["state"]["pyvault"]``, and Starlette's ``request.user`` (``PyvaultUser``) and
``request.auth``."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from starlette.authentication import BaseUser

from pyvault_tokens.display import rfc3339

__all__ = ["PyvaultAuth", "PyvaultUser", "pyvault_auth"]


@dataclass(frozen=True, slots=True)
class PyvaultAuth:
    """What a validated request carries in ``scope["state"]["pyvault"]``
    (``request.state.pyvault`` in Starlette). Attribute or item access both work."""

    user_hk: str
    """The user's hash key, lower-case hex."""
    tenant_hk: str
    """The tenant's hash key, lower-case hex."""
    scope: tuple[str, ...]
    expires_at: datetime
    """When the token expires; after a refresh, when the new (or extended) token expires."""
    was_refreshed: bool
    refresh_reason: str

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: lists and an RFC 3339 expiry."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["scope"] = list(self.scope)
        out["expires_at"] = rfc3339(self.expires_at)
        return out


class PyvaultUser(BaseUser):
    """``request.user`` of a request with a valid token (Starlette's BaseUser), and
    ``request.auth`` is ``AuthCredentials(<the token's scopes>)``, as Starlette's
    AuthenticationMiddleware would set them, so ``starlette.authentication.requires``
    works. Without a token (``optional=True``) ``request.user`` is an
    ``UnauthenticatedUser``."""

    def __init__(self, auth: PyvaultAuth) -> None:
        self.auth = auth

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.auth.user_hk

    @property
    def identity(self) -> str:
        return self.auth.user_hk

    @property
    def user_hk(self) -> str:
        return self.auth.user_hk

    @property
    def tenant_hk(self) -> str:
        return self.auth.tenant_hk

    @property
    def scope(self) -> tuple[str, ...]:
        return self.auth.scope

    def __repr__(self) -> str:
        return f"PyvaultUser(user_hk={self.auth.user_hk!r}, tenant_hk={self.auth.tenant_hk!r})"


def request_state(conn_scope: Any) -> object:
    """The ``state`` of an ASGI scope, or of a Starlette Request (which has ``.scope``)."""
    raw = getattr(conn_scope, "scope", conn_scope)
    return raw.get("state")


def pyvault_auth(conn_scope: Any) -> PyvaultAuth | None:
    """The PyvaultAuth of a request's ASGI scope (or of a Starlette Request), if any."""
    state = request_state(conn_scope) or {}
    value = state.get("pyvault") if isinstance(state, MutableMapping) else None
    return value if isinstance(value, PyvaultAuth) else None
