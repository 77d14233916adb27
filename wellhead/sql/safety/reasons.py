"""Why a statement is refused: one phrase per reason, shown to the agent after the name."""

from __future__ import annotations

FILES = "it reads files from the server's filesystem"
LISTS_FILES = "it lists files on the server"
WRITES_FILES = "it writes files on the server"
NETWORK = "it reaches other databases or the network"
EXTENSIONS = "it installs or loads extensions"
SETTINGS = "it changes settings or session state"
READS_SETTINGS = "it reads server settings or secrets"
ENV = "it reads the server's environment variables"
DYNAMIC = "it runs dynamic SQL that cannot be checked"
SEQUENCE = "it changes a sequence"
SESSIONS = "it signals or stops other sessions"
LOCKS = "it takes locks"
WRITES = "it writes to the database"
SERVER = "it controls the server"
MEMORY = "it reads raw memory or engine internals"
OTHER_SESSIONS = (
    "it shows other sessions' statements or activity (every caller shares one database role, "
    "so it would reveal other callers' SQL and literals)"
)
INTERNALS = "it reveals server internals (file paths, configuration or memory)"
PATHS = "it reveals file paths on the server"
PATH_SETTING = "this setting holds a server file path, a command or a connection string"

HINT = "query the configured tables and views instead"

Rule = tuple[str, str]
"""(name prefix or suffix, reason)."""
