"""What the benchmark runs: the sizes of a mode, the token ranges, and the timed rows."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# The lifecycle row (bench/lifecycle.py) measures on these simulated days.
LIFECYCLE_DAYS = (0, 100, 200)


@dataclass
class Plan:
    quick: bool
    n_read: int
    n_hot: int
    n_due: int
    rotate_per_run: int
    duration: float
    reps: int
    clients: tuple[int, ...] = (2, 8)
    tenants: int = 100
    users: int = 10_000
    sampling_rate: float = 0.1
    profile: bool = False
    # The lifecycle row: clients that hold one token each (bytes per live token depend on
    # it: the small tables' fixed cost), pgbench's clients and seconds per run.
    lifecycle_clients: int = 5_000
    lifecycle_pgbench_clients: int = 2
    lifecycle_duration: float = 3.0
    # Short function/floor runs back to back (driver.floor_pairs), and seconds each.
    pair_runs: int = 10
    pair_duration: float = 3.0

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            plan = cls(quick=True, n_read=20_000, n_hot=1_000, n_due=2_000,
                       rotate_per_run=400, duration=2.0, reps=1, tenants=10, users=1_000,
                       sampling_rate=1.0, lifecycle_clients=800, lifecycle_duration=1.0,
                       pair_runs=2, pair_duration=1.0)
        else:
            plan = cls(quick=False, n_read=1_000_000, n_hot=10_000, n_due=100_000,
                       rotate_per_run=4_000, duration=10.0, reps=3)
        if args.tokens:
            plan.n_read = args.tokens
        if args.duration:
            plan.duration = args.duration
        if args.reps:
            plan.reps = args.reps
        if args.lifecycle_clients is not None:
            plan.lifecycle_clients = args.lifecycle_clients
        plan.profile = args.profile
        return plan

    # i ranges, in load order
    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        n_rotate = len(ROTATION_ROWS) * len(self.clients) * self.reps * self.rotate_per_run
        spans = [("read", self.n_read), ("hot", self.n_hot), ("rotate", n_rotate),
                 ("due", 2 * self.n_due)]
        ranges, first = {}, 1
        for kind, count in spans:
            ranges[kind] = (first, first + count - 1)
            first += count
        return ranges


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    script: str
    kind: str  # token range it draws from
    writes: bool = False  # runs after the read-only rows of a repetition
    floor: str | None = None  # the PL/pgSQL floor row of the same result shape


READ_ROWS = [
    Row("driver", "driver: read a pre-made token by id, no probe", "driver.sql", "read"),
    Row("limit_bridge", "LIMIT: index probe, api_token_bridge", "limit_bridge.sql", "read"),
    # Each floor runs beside the function held to it (driver.paired).
    Row("plpgsql_floor_validate", "PL/pgSQL floor, validate's six columns",
        "plpgsql_floor_validate.sql", "read"),
    Row("validate", "validate_production_api_token", "validate.sql", "read",
        floor="plpgsql_floor_validate"),
    Row("plpgsql_floor", "PL/pgSQL floor: LIMIT probe in a SECURITY DEFINER function "
        "(nine columns)", "plpgsql_floor.sql", "read"),
    Row("validate_and_refresh", "validate_and_refresh, no refresh due",
        "validate_and_refresh.sql", "read", floor="plpgsql_floor"),
    Row("validate_and_refresh_debounce", "validate_and_refresh, 60 s debounce (hot set)",
        "validate_and_refresh.sql", "hot", writes=True, floor="plpgsql_floor"),
    Row("peer_seed", "peer: seed shape, UPDATE+INSERT per call", "peer_seed.sql", "read",
        writes=True),
]
ROTATION_ROWS = [
    Row("rotate_validate_and_refresh", "rotations/s: validate_and_refresh (due)",
        "rotate_validate_and_refresh.sql", "rotate", writes=True),
    Row("rotate_refresh_enhanced", "rotations/s: refresh_production_token_enhanced(t,7,true)",
        "rotate_refresh_enhanced.sql", "rotate", writes=True),
]
LIMIT_ID = "limit_bridge"
DRIVER_ID = "driver"
