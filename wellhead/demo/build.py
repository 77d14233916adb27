"""Deterministic demo commerce database, built on first use into the user's cache dir.

Why: `wellhead serve` with no config must answer real SQL on data big enough that pagination and
budgets matter, without shipping a binary blob in git and without the network. Every value is a pure
function of its row number (integer mixing in DuckDB SQL, no `random()`), so two builds of the same
version are identical, row for row.

Keys: every table has its PRIMARY KEY; orders.customer_id and order_items.order_id are declared
FOREIGN KEYs. order_items.product_id is not (DuckDB indexes each FK column, and this one cost about
a quarter of the build's CPU time); its column comment names the reference instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

import duckdb
import platformdirs

from wellhead.errors import SourceUnavailable

__all__ = [
    "DEMO_COUNTS",
    "DEMO_SCHEMA_VERSION",
    "DEMO_TABLES",
    "build_demo_database",
    "demo_cache_dir",
    "demo_database_path",
    "ensure_demo_database",
]

log = logging.getLogger("wellhead.demo")

# Bump when the schema or the generated values change: the file name carries it, so a new version
# builds a fresh file instead of reusing a stale one.
DEMO_SCHEMA_VERSION = 2

DEMO_TABLES: tuple[str, ...] = ("customers", "products", "orders", "order_items")

DEMO_COUNTS: dict[str, int] = {
    "customers": 50_000,
    "products": 2_000,
    "orders": 1_000_000,
}

_ENV_CACHE_DIR = "WELLHEAD_CACHE_DIR"
_MAX_LINES = 4  # lines per order: 1 (40%), 2 (30%), 3 (20%) or 4 (10%); 2.0 on average
# Parallel transactions for the foreign-key-checked inserts; more than the cores only adds overhead.
_MAX_SLICES = 4

# Integer mixing with every intermediate below 2**63, so BIGINT arithmetic never overflows and the
# values do not depend on DuckDB's internal hash() (which may change between releases). An order's
# lines are pure functions of (order_id, line_no), so orders can carry their exact total without a
# join, and each table is generated straight from range() in key order.
_MACROS = f"""
CREATE TEMP MACRO _xs15(x) AS xor(x, x >> 15);
CREATE TEMP MACRO _xs13(x) AS xor(x, x >> 13);
CREATE TEMP MACRO mix(n, s) AS
    _xs13((_xs15(((n) * 2654435761 + (s) * 97531) % 2147483648) * 2246822519) % 2147483648);
CREATE TEMP MACRO pick(n, s, k) AS 1 + mix(n, s) % (k);
CREATE TEMP MACRO price_cents(p) AS
    CASE WHEN mix(p, 41) % 10 < 6 THEN 200 + mix(p, 41) // 10 % 4800
         WHEN mix(p, 41) % 10 < 9 THEN 5000 + mix(p, 41) // 10 % 25000
         ELSE 30000 + mix(p, 41) // 10 % 170000 END;
CREATE TEMP MACRO product_price(p) AS CAST(price_cents(p) / 100 AS DECIMAL(10, 2));
CREATE TEMP MACRO n_lines(o) AS CASE
    WHEN mix(o, 20) % 10 < 4 THEN 1 WHEN mix(o, 20) % 10 < 7 THEN 2
    WHEN mix(o, 20) % 10 < 9 THEN 3 ELSE 4 END;
CREATE TEMP MACRO line_mix(o, l) AS mix((o) * {_MAX_LINES} + (l), 21);
CREATE TEMP MACRO line_product(m) AS CAST(1 + (m) % {DEMO_COUNTS["products"]} AS INTEGER);
CREATE TEMP MACRO line_quantity(m) AS CAST(
    CASE WHEN (m) // 4096 % 10 < 6 THEN 1 ELSE 2 + (m) // 65536 % 4 END AS INTEGER);
"""

_DDL_PARENTS = """
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    name        VARCHAR NOT NULL,
    email       VARCHAR NOT NULL,
    country     VARCHAR NOT NULL,
    region      VARCHAR NOT NULL,
    signup_date DATE NOT NULL,
    segment     VARCHAR NOT NULL CHECK (segment IN ('consumer', 'small_business', 'enterprise'))
);
CREATE TABLE products (
    product_id INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    category   VARCHAR NOT NULL,
    price      DECIMAL(10, 2) NOT NULL CHECK (price > 0)
);
-- The big tables get their primary keys by ALTER after loading: a bulk index build is several
-- times faster than maintaining the index row by row. Foreign keys are declared up front (DuckDB
-- cannot add them later), so every row is checked as it goes in.
CREATE TABLE orders (
    order_id    BIGINT NOT NULL,
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    ordered_at  TIMESTAMP NOT NULL,
    status      VARCHAR NOT NULL
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    total       DECIMAL(12, 2) NOT NULL,
    channel     VARCHAR NOT NULL CHECK (channel IN ('web', 'mobile', 'store', 'phone'))
);
"""

_DDL_ORDER_ITEMS = """
CREATE TABLE order_items (
    order_id   BIGINT NOT NULL REFERENCES orders (order_id),
    line_no    SMALLINT NOT NULL,
    -- References products (product_id), but not declared: DuckDB would keep another index on
    -- this low-cardinality column, about a quarter of the build's CPU time. The column comment
    -- says so, for agents.
    product_id INTEGER NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price DECIMAL(10, 2) NOT NULL
);
"""

_FIRST = [
    "Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Liam", "Maya", "Nikos", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara",
    "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Amara", "Bruno", "Carmen", "Diego",
    "Emma", "Felix", "Hana", "Ivan", "Julia", "Kofi", "Lena", "Mateo", "Noor", "Oscar",
]  # fmt: skip
_LAST = [
    "Smith", "Garcia", "Müller", "Rossi", "Kowalski", "Nguyen", "Tanaka", "Okafor", "Silva",
    "Dubois", "Jensen", "Novak", "Haddad", "Kim", "Patel", "Cohen", "Ivanova", "Lopez", "Berg",
    "Fischer", "Moreau", "Costa", "Andersen", "Yilmaz", "Mensah", "Chen", "Walsh", "Sato",
    "Romero", "Lindqvist",
]  # fmt: skip
# (country, region); duplicates weight the larger markets.
_COUNTRIES = [
    ("US", "North America"), ("US", "North America"), ("US", "North America"),
    ("CA", "North America"), ("MX", "North America"), ("BR", "South America"),
    ("AR", "South America"), ("GB", "Europe"), ("GB", "Europe"), ("DE", "Europe"),
    ("DE", "Europe"), ("FR", "Europe"), ("ES", "Europe"), ("IT", "Europe"), ("NL", "Europe"),
    ("SE", "Europe"), ("PL", "Europe"), ("IN", "Asia Pacific"), ("JP", "Asia Pacific"),
    ("AU", "Asia Pacific"), ("SG", "Asia Pacific"), ("KR", "Asia Pacific"),
    ("NG", "Middle East & Africa"), ("ZA", "Middle East & Africa"), ("AE", "Middle East & Africa"),
]  # fmt: skip
_CATEGORIES = {
    "Electronics": ["Headphones", "Charger", "Speaker", "Keyboard", "Monitor"],
    "Home": ["Lamp", "Blanket", "Vase", "Clock", "Rug"],
    "Kitchen": ["Kettle", "Skillet", "Knife Set", "Blender", "Mug"],
    "Outdoors": ["Tent", "Backpack", "Lantern", "Hammock", "Water Bottle"],
    "Apparel": ["Jacket", "Sneakers", "Scarf", "Hoodie", "Cap"],
    "Toys": ["Puzzle", "Kite", "Building Set", "Plush Bear", "Board Game"],
    "Beauty": ["Face Cream", "Shampoo", "Perfume", "Lip Balm", "Sunscreen"],
    "Books": ["Cookbook", "Atlas", "Novel", "Field Guide", "Notebook"],
}
_ADJECTIVES = [
    "Classic", "Compact", "Deluxe", "Eco", "Essential", "Nordic", "Pro", "Smart", "Travel",
    "Vintage", "Ultra", "Urban", "Premium", "Everyday", "Mini", "Rugged", "Solar", "Studio",
    "Heritage", "Aero",
]  # fmt: skip


def _sql_list(values: list[str]) -> str:
    """A DuckDB list literal; inputs are our own constants, quoted defensively anyway."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


_COMMENTS = """
COMMENT ON TABLE customers IS 'Demo: one row per customer (synthetic). Join orders on customer_id.';
COMMENT ON COLUMN customers.country IS 'ISO 3166-1 alpha-2 country code';
COMMENT ON COLUMN customers.region IS 'Sales region the country belongs to';
COMMENT ON COLUMN customers.signup_date IS 'Date the customer created an account (2020..2024)';
COMMENT ON COLUMN customers.segment IS 'consumer | small_business | enterprise';
COMMENT ON TABLE products IS 'Demo: product catalogue (synthetic), one row per product.';
COMMENT ON COLUMN products.category IS 'Top-level category, e.g. Electronics, Kitchen';
COMMENT ON COLUMN products.price IS 'Current list price in USD';
COMMENT ON TABLE orders IS
    'Demo: 1,000,000 orders placed 2022-01-01..2024-12-31, order_id increases with ordered_at.';
COMMENT ON COLUMN orders.ordered_at IS 'When the order was placed (UTC, no time zone)';
COMMENT ON COLUMN orders.status IS
    'pending | paid | shipped | delivered | cancelled | returned; open statuses only in late 2024';
COMMENT ON COLUMN orders.total IS
    'Order value in USD: exactly sum(quantity * unit_price) of its lines';
COMMENT ON COLUMN orders.channel IS 'web | mobile | store | phone';
COMMENT ON TABLE order_items IS 'Demo: order lines, 1 to 4 per order; key (order_id, line_no).';
COMMENT ON COLUMN order_items.unit_price IS 'Price paid per unit in USD (the product list price)';
COMMENT ON COLUMN order_items.product_id IS
    'References products.product_id (every value exists there; not declared as a foreign key)';
"""


class _Step(NamedTuple):
    """One build statement; a sliced one runs once per order-id range, concurrently."""

    label: str
    sql: str
    sliced: bool = False


def _build_steps() -> list[_Step]:
    """(label, SQL) in dependency order; orders' totals are the exact sum of their lines."""
    nouns = [n for ns in _CATEGORIES.values() for n in ns]
    noun_category = [c for c, ns in _CATEGORIES.items() for _ in ns]
    n_cust, n_prod, n_ord = DEMO_COUNTS["customers"], DEMO_COUNTS["products"], DEMO_COUNTS["orders"]
    countries = [c for c, _ in _COUNTRIES]
    regions = [r for _, r in _COUNTRIES]
    # Customers sign up evenly over 2020..2024 in id order (1827 days). Orders run evenly over
    # 2022..2024 (94,694,400 s) in id order, so order_id order is time order, and each is placed by
    # a customer who had signed up at least a day before.
    customers = f"""
INSERT INTO customers
SELECT
    id,
    first || ' ' || last,
    lower(strip_accents(first || '.' || last)) || id || '@example.com',
    {_sql_list(countries)}[k],
    {_sql_list(regions)}[k],
    DATE '2020-01-01' + CAST((id - 1) * 1827 // {n_cust} AS INTEGER),
    CASE WHEN mix(id, 5) % 100 < 70 THEN 'consumer'
         WHEN mix(id, 5) % 100 < 93 THEN 'small_business'
         ELSE 'enterprise' END
FROM (
    SELECT range + 1 AS id,
           {_sql_list(_FIRST)}[pick(range + 1, 1, {len(_FIRST)})] AS first,
           {_sql_list(_LAST)}[pick(range + 1, 2, {len(_LAST)})] AS last,
           pick(range + 1, 3, {len(_COUNTRIES)}) AS k
    FROM range({n_cust})
)"""
    products = f"""
INSERT INTO products
SELECT
    id,
    {_sql_list(_ADJECTIVES)}[pick(id, 11, {len(_ADJECTIVES)})] || ' '
        || {_sql_list(nouns)}[noun] || ' ' || chr(65 + CAST(mix(id, 13) % 26 AS INTEGER))
        || (100 + mix(id, 14) % 900),
    {_sql_list(noun_category)}[noun],
    product_price(id)
FROM (SELECT range + 1 AS id, pick(range + 1, 12, {len(nouns)}) AS noun FROM range({n_prod}))"""
    # An order's total is its lines' sum, unrolled over the possible line numbers (a lambda or a
    # join would cost several times more) and added in integer cents (DECIMAL products widen to
    # 128-bit arithmetic); m_i, p_i, q_i are NULL past the order's last line.
    lines = range(1, _MAX_LINES + 1)
    line_mixes = ", ".join(f"CASE WHEN n >= {i} THEN line_mix(id, {i}) END AS m{i}" for i in lines)
    line_cols = ", ".join(f"line_product(m{i}) AS p{i}, line_quantity(m{i}) AS q{i}" for i in lines)
    total_cents = " + ".join(f"coalesce(q{i} * price_cents(p{i}), 0)" for i in lines)
    orders = f"""
INSERT INTO orders
SELECT
    id,
    CAST(1 + mix(id, 31) % greatest(1, (secs + 63158400 - 86400) * {n_cust} // 157852800)
         AS INTEGER),
    TIMESTAMP '2022-01-01' + to_seconds(secs),
    CASE WHEN secs >= 93830400 AND mix(id, 32) % 10 < 7 THEN
             CASE mix(id, 33) % 3 WHEN 0 THEN 'pending' WHEN 1 THEN 'paid' ELSE 'shipped' END
         WHEN mix(id, 34) % 100 < 6 THEN 'cancelled'
         WHEN mix(id, 34) % 100 < 11 THEN 'returned'
         ELSE 'delivered' END,
    CAST(({total_cents}) / 100 AS DECIMAL(12, 2)),
    CASE WHEN mix(id, 35) % 100 < 55 THEN 'web'
         WHEN mix(id, 35) % 100 < 85 THEN 'mobile'
         WHEN mix(id, 35) % 100 < 95 THEN 'store'
         ELSE 'phone' END
FROM (
    SELECT id, secs, {line_cols}
    FROM (
        SELECT id, secs, {line_mixes}
        FROM (
            SELECT range + 1 AS id,
                   CAST(range * 94694400 // {n_ord} + mix(range + 1, 30) % (94694400 // {n_ord})
                        AS BIGINT) AS secs,
                   n_lines(range + 1) AS n
            FROM range(__LO__, __HI__)
        )
    )
)"""
    # One candidate row per possible line, kept when line_no <= n_lines: ordered, no sort, no join.
    items = f"""
INSERT INTO order_items
SELECT order_id, line_no, product_id, quantity, product_price(product_id)
FROM (
    SELECT order_id, line_no, line_product(m) AS product_id, line_quantity(m) AS quantity
    FROM (
        SELECT order_id, line_no, line_mix(order_id, line_no) AS m
        FROM (
            SELECT range // {_MAX_LINES} + 1 AS order_id,
                   CAST(range % {_MAX_LINES} + 1 AS SMALLINT) AS line_no
            FROM range(__LO__ * {_MAX_LINES}, __HI__ * {_MAX_LINES})
        )
        WHERE line_no <= n_lines(order_id)
    )
)"""
    return [
        _Step("create parents", _DDL_PARENTS),
        _Step("customers", customers),
        _Step("products", products),
        _Step("orders", orders, sliced=True),
        _Step("orders key", "ALTER TABLE orders ADD PRIMARY KEY (order_id)"),
        _Step("create order_items", _DDL_ORDER_ITEMS),
        _Step("order_items", items, sliced=True),
        _Step("order_items key", "ALTER TABLE order_items ADD PRIMARY KEY (order_id, line_no)"),
        _Step("comments", _COMMENTS),
    ]


def demo_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where the demo lives: the argument, else $WELLHEAD_CACHE_DIR, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(_ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("wellhead"))


def demo_database_path(cache_dir: Path | None = None) -> Path:
    """The versioned file name, so a schema change never reuses an older file."""
    return demo_cache_dir(cache_dir) / f"demo-v{DEMO_SCHEMA_VERSION}.duckdb"


def build_demo_database(path: Path) -> None:
    """Write the full demo database to `path` (which must not exist). Blocking; no locking."""
    con = duckdb.connect(str(path))
    try:
        con.execute(_MACROS)
        for step in _build_steps():
            started = time.perf_counter()
            if step.sliced:
                _run_sliced(con, step.sql)
            else:
                con.execute(step.sql)
            log.debug("demo build step %s: %.2f s", step.label, time.perf_counter() - started)
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _run_sliced(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run `sql` over disjoint order-id ranges in parallel transactions, committed in range order.

    Why: DuckDB checks foreign keys on one thread per INSERT; slicing lets both cores check. The
    commits go in ascending order, so rows stay stored in order_id order (scans come back sorted).
    """
    n_ord = DEMO_COUNTS["orders"]
    slices = max(1, min(_MAX_SLICES, os.cpu_count() or 1))
    bounds = [n_ord * i // slices for i in range(slices + 1)]
    cursors = [con.cursor() for _ in range(slices)]
    try:
        for cur in cursors:
            cur.execute(_MACROS)
            cur.execute("BEGIN TRANSACTION")
        with ThreadPoolExecutor(max_workers=slices, thread_name_prefix="wellhead-demo") as pool:
            futures = [
                pool.submit(cur.execute, sql.replace("__LO__", str(lo)).replace("__HI__", str(hi)))
                for cur, lo, hi in zip(cursors, bounds[:-1], bounds[1:], strict=True)
            ]
            for future in futures:
                future.result()
        for cur in cursors:
            cur.execute("COMMIT")
    finally:
        for cur in cursors:
            cur.close()


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Block until this process holds the build lock (a concurrent builder finishes first)."""
    with open(lock_path, "a+b") as fh:
        _lock(fh)
        try:
            yield
        finally:
            _unlock(fh)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fh: IO[bytes]) -> None:
        fh.seek(0)
        while True:  # LK_LOCK gives up after about 10 s; a build can take longer
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

    def _unlock(fh: IO[bytes]) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fh: IO[bytes]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)

    def _unlock(fh: IO[bytes]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(final: Path) -> None:
    """Drop half-written files a crashed builder left; only called while holding the lock."""
    for stale in final.parent.glob(final.name + ".tmp-*"):
        stale.unlink(missing_ok=True)


def _remove_older_versions(final: Path) -> None:
    """Free the disk older demo versions use (~150 MB each); open handles keep working."""
    for old in final.parent.glob("demo-v*.duckdb*"):
        version = old.name.removeprefix("demo-v").split(".", 1)[0]
        if version.isdigit() and int(version) < DEMO_SCHEMA_VERSION:
            old.unlink(missing_ok=True)


def ensure_demo_database(cache_dir: Path | None = None) -> Path:
    """Return the demo DuckDB file, building it first if this version is not cached yet.

    Safe across processes: the build goes to a temp file in the same directory and is renamed into
    place atomically under an exclusive lock, so a concurrent caller waits and then reuses the file.
    Blocking (several seconds on first use): call it from a worker thread in async code.
    Raises SourceUnavailable when the cache dir is not writable or the build fails.
    """
    final = demo_database_path(cache_dir)
    if final.is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(final.with_name(final.name + ".lock")):
            if final.is_file():  # another process built it while we waited
                return final
            _build_into_place(final)
    except (OSError, duckdb.Error) as exc:
        raise SourceUnavailable(
            f"cannot build the demo database in {final.parent}: {exc}. "
            f"Set {_ENV_CACHE_DIR} to a writable directory with about 200 MB free."
        ) from exc
    return final


def _build_into_place(final: Path) -> None:
    """Build next to `final`, then rename; the caller holds the lock."""
    _remove_stale_temps(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    started = time.perf_counter()
    try:
        build_demo_database(tmp)
        os.replace(tmp, final)
        _remove_older_versions(final)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    log.info(
        "built demo database %s in %.2f s",
        final,
        seconds,
        extra={"path": str(final), "seconds": round(seconds, 3)},
    )
