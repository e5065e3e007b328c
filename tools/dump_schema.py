"""Write tests/expected-schema.txt: the normalised schema of a freshly migrated database
(`make schema-dump`). Review its diff like code: it is what migrations plus sql/ build."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyvault_tokens.embedded import start_cluster  # noqa: E402
from pyvault_tokens.migrate import migrate  # noqa: E402
from tests.schema_dump import EXPECTED, dump_schema  # noqa: E402


def main() -> int:
    pg = start_cluster()
    try:
        url = pg.url(database="postgres")
        migrate(url)
        EXPECTED.write_text(dump_schema(url), encoding="utf-8")
    finally:
        pg.stop()
    print(f"wrote {EXPECTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
