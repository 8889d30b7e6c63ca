"""The metadata index: every stored name in a local SQLite file, so listings cost O(log N + answer).

- db: the file, its tables and queries;
- catalog: store writes that keep it in step, and the queries' entry points;
- sync: the leader's background work (scans, other instances' journal, crash repair);
- routes: /match and /index.json.
"""

from __future__ import annotations

from .catalog import Catalog, IndexUnavailable
from .routes import IndexRoutes
from .sync import Follower

__all__ = ["Catalog", "Follower", "IndexRoutes", "IndexUnavailable"]
