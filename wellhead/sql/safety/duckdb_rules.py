"""DuckDB: functions and views refused, all names lowercase."""

from __future__ import annotations

from wellhead.sql.safety.reasons import (
    DYNAMIC,
    ENV,
    EXTENSIONS,
    FILES,
    LISTS_FILES,
    MEMORY,
    NETWORK,
    PATHS,
    READS_SETTINGS,
    SEQUENCE,
    SETTINGS,
    WRITES,
    Rule,
)

EXACT: dict[str, str] = {
    "glob": LISTS_FILES,
    "duckdb_external_file_cache": LISTS_FILES,
    "duckdb_temporary_files": LISTS_FILES,
    "sniff_csv": FILES,
    "parquet_metadata": FILES,
    "parquet_schema": FILES,
    "parquet_file_metadata": FILES,
    "parquet_kv_metadata": FILES,
    "parquet_full_metadata": FILES,
    "parquet_bloom_probe": FILES,
    "delta_scan": FILES,
    "import_database": FILES,
    "copy_database": WRITES,
    "sqlite_attach": NETWORK,
    "sqlite_query": NETWORK,
    "postgres_attach": NETWORK,
    "postgres_query": NETWORK,
    "postgres_execute": NETWORK,
    "getenv": ENV,
    "current_setting": READS_SETTINGS,
    "duckdb_settings": READS_SETTINGS,
    "duckdb_secrets": READS_SETTINGS,
    "which_secret": READS_SETTINGS,
    "duckdb_logs": READS_SETTINGS,
    "duckdb_logs_parsed": READS_SETTINGS,
    "duckdb_log_contexts": READS_SETTINGS,
    "duckdb_prepared_statements": READS_SETTINGS,
    "duckdb_databases": PATHS,
    "duckdb_extensions": PATHS,
    "duckdb_variables": READS_SETTINGS,
    "getvariable": READS_SETTINGS,
    "query": DYNAMIC,
    "query_table": DYNAMIC,
    "json_execute_serialized_sql": DYNAMIC,
    "from_substrait": DYNAMIC,
    "from_substrait_json": DYNAMIC,
    "checkpoint": WRITES,
    "force_checkpoint": WRITES,
    "truncate_duckdb_logs": WRITES,
    "write_log": WRITES,
    "verify_parallelism": SETTINGS,
    "add_parquet_key": SETTINGS,
    "setseed": SETTINGS,
    "set_variable": SETTINGS,
    "nextval": SEQUENCE,
    "setval": SEQUENCE,
    "load_extension": EXTENSIONS,
    "install_extension": EXTENSIONS,
    "load": EXTENSIONS,
    "install": EXTENSIONS,
    "pandas_scan": MEMORY,
    "python_map_function": MEMORY,
}
PREFIX: list[Rule] = [
    ("read_", FILES),
    ("iceberg_", FILES),
    ("ducklake_", FILES),
    ("st_read", FILES),
    ("mysql_", NETWORK),
    ("postgres_", NETWORK),
    ("sqlite_scan", FILES),
    ("http_", NETWORK),
    ("enable_", SETTINGS),
    ("disable_", SETTINGS),
    ("arrow_scan", MEMORY),
    ("python_", MEMORY),
    ("create_external_resource", SETTINGS),
    ("register_external_resource", SETTINGS),
    ("deregister_external_resource", SETTINGS),
    ("destroy_external_resource", SETTINGS),
]
SUFFIX: list[Rule] = [("_scan", FILES)]
# Read-only introspection `pragma_*` table functions; every other `pragma_*` is denied.
PRAGMA_OK = frozenset(
    {
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_collations",
        "pragma_platform",
        "pragma_metadata_info",
        "pragma_user_agent",
    }
)

# Views that reveal paths or settings, refused by name in any schema.
TABLES: dict[str, str] = {
    "duckdb_databases": PATHS,
    "pragma_database_list": PATHS,
    "pg_settings": READS_SETTINGS,
    "pg_prepared_statements": READS_SETTINGS,
}
# Denied functions DuckDB also accepts as a bare table name.
EPONYMOUS = frozenset({"duckdb_logs", "duckdb_logs_parsed", "duckdb_log_contexts"})
