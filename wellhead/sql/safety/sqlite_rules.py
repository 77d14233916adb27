"""SQLite: functions refused (also as eponymous tables), all names lowercase."""

from __future__ import annotations

from wellhead.sql.safety.reasons import (
    DYNAMIC,
    EXTENSIONS,
    FILES,
    LISTS_FILES,
    MEMORY,
    WRITES_FILES,
    Rule,
)

EXACT: dict[str, str] = {
    "load_extension": EXTENSIONS,
    "readfile": FILES,
    "writefile": WRITES_FILES,
    "edit": WRITES_FILES,
    "fsdir": LISTS_FILES,
    "lsmode": LISTS_FILES,
    "zipfile": FILES,
    "zipfile_cds": FILES,
    "fts3_tokenizer": MEMORY,
    "sqlite_dbpage": MEMORY,
    "sqlite_dbdata": MEMORY,
    "sqlite_dbptr": MEMORY,
    "dbstat": MEMORY,
    "eval": DYNAMIC,
    "sha3_query": DYNAMIC,
}
PREFIX: list[Rule] = []
PRAGMA_OK = frozenset(
    {
        "pragma_table_info",
        "pragma_table_xinfo",
        "pragma_index_list",
        "pragma_index_info",
        "pragma_index_xinfo",
        "pragma_foreign_key_list",
    }
)
