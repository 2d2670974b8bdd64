"""Storage: the SQLite schema and its numbered migrations, shared by the store and the
dashboard's account tables (both live in the hub's one database file)."""
