-- Fixtures for tests/test_source_postgres.py, loaded by .ci/postgres.sh into wellhead_test
-- as the cluster superuser. psql variables: ro_pw, writer_pw, db.
SET client_min_messages = warning;

-- Roles are cluster-wide: create them once, (re)set their passwords every load.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellhead_ro') THEN
    CREATE ROLE wellhead_ro LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellhead_writer') THEN
    CREATE ROLE wellhead_writer LOGIN;
  END IF;
END $$;
ALTER ROLE wellhead_ro PASSWORD :'ro_pw';
ALTER ROLE wellhead_writer PASSWORD :'writer_pw';
SET ROLE wellhead_admin;  -- fixture objects belong to the admin role, not to the readers

-- A big table: 1,000,000 orders.
CREATE TABLE public.orders (
    id          bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status      text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    created_at  timestamptz NOT NULL,
    note        text
);
COMMENT ON TABLE public.orders IS 'One row per order (1,000,000 synthetic rows).';
COMMENT ON COLUMN public.orders.amount IS 'Order total in EUR.';
INSERT INTO public.orders
SELECT i,
       1 + (i * 7919) % 1000,
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + i % 4],
       ((i * 37) % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + make_interval(mins => i::int),
       CASE WHEN i % 10 = 0 THEN 'note ' || i END
FROM generate_series(1::bigint, 1000000) AS s(i);

-- Small tables with keys and comments.
CREATE SCHEMA sales;
COMMENT ON SCHEMA sales IS 'Customers and products.';
CREATE TABLE sales.customers (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    email   text,
    country char(2) NOT NULL DEFAULT 'FR'
);
COMMENT ON TABLE sales.customers IS 'People who buy things.';
COMMENT ON COLUMN sales.customers.email IS 'Contact address; may be null.';
INSERT INTO sales.customers
SELECT i, 'customer ' || i, CASE WHEN i % 3 <> 0 THEN 'c' || i || '@example.com' END,
       (ARRAY['FR', 'DE', 'US', 'JP'])[1 + i % 4]
FROM generate_series(1, 1000) AS s(i);

CREATE TABLE sales.products (
    sku   text PRIMARY KEY,
    title text NOT NULL,
    price numeric(10, 2) NOT NULL
);
INSERT INTO sales.products
SELECT 'SKU-' || i, 'product ' || i, i * 1.5 FROM generate_series(1, 50) AS s(i);

CREATE TABLE sales.order_items (
    order_id    bigint NOT NULL,
    line        integer NOT NULL,
    customer_id integer NOT NULL REFERENCES sales.customers (id),
    sku         text NOT NULL REFERENCES sales.products (sku),
    quantity    integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line)
);
COMMENT ON TABLE sales.order_items IS 'Order lines.';
INSERT INTO sales.order_items
SELECT i / 3, i % 3, 1 + i % 1000, 'SKU-' || (1 + i % 50), 1 + i % 5
FROM generate_series(3, 3002) AS s(i);

-- Same table name in two schemas outside search_path: a bare `products` is ambiguous.
CREATE SCHEMA archive;
CREATE TABLE archive.products (sku text PRIMARY KEY, title text);

-- A view, a materialized view, a partitioned table, a sequence, odd names, odd types.
CREATE VIEW public.customer_totals AS
SELECT customer_id, count(*) AS orders, sum(amount) AS total
FROM public.orders GROUP BY customer_id;
COMMENT ON VIEW public.customer_totals IS 'Orders and revenue per customer.';

CREATE MATERIALIZED VIEW public.status_counts AS
SELECT status, count(*) AS n FROM public.orders GROUP BY status;

CREATE TABLE public.events (
    id   bigint NOT NULL,
    at   date NOT NULL,
    kind text NOT NULL
) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.events
SELECT i, date '2024-01-01' + (i % 700), 'kind' || (i % 5) FROM generate_series(1, 10000) AS s(i);

CREATE SEQUENCE public.counter_seq;

CREATE TABLE public."Mixed Case" ("Weird Column" integer PRIMARY KEY, plain text);
INSERT INTO public."Mixed Case" VALUES (1, 'one'), (2, 'two');

CREATE TYPE public.money_pair AS (currency text, value numeric);
CREATE TABLE public.type_zoo (
    id     integer PRIMARY KEY,
    uid    uuid,
    price  numeric,
    at     timestamptz,
    span   interval,
    doc    jsonb,
    nums   integer[],
    pair   public.money_pair,
    blob   bytea,
    addr   inet
);
INSERT INTO public.type_zoo VALUES
  (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12.50, '2024-05-01 12:00:00+00', '1 day 2 hours',
   '{"a": [1, 2], "b": {"c": true}}', '{1,2,3}', ROW('EUR', 9.99), '\xdeadbeef', '10.0.0.1'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

-- Not granted to the reader: must not be listed for it.
CREATE TABLE public.secrets (id integer PRIMARY KEY, secret text);
INSERT INTO public.secrets VALUES (1, 'do not read');

-- 5,000 small tables for discovery speed.
CREATE SCHEMA many;
DO $$
BEGIN
  FOR i IN 1..5000 LOOP
    EXECUTE format('CREATE TABLE many.t%s (id integer PRIMARY KEY, v integer)', lpad(i::text, 4, '0'));
    IF i % 100 = 0 THEN
      EXECUTE format('COMMENT ON TABLE many.t%s IS %L', lpad(i::text, 4, '0'), 'table number ' || i);
    END IF;
  END LOOP;
END $$;

ANALYZE;

-- The least-privilege reader (the recipe in docs/postgres.md).
RESET ROLE;
GRANT CONNECT ON DATABASE :"db" TO wellhead_ro;
GRANT USAGE ON SCHEMA public, sales, many, archive TO wellhead_ro;
GRANT SELECT ON ALL TABLES IN SCHEMA public, sales, many, archive TO wellhead_ro;
REVOKE SELECT ON public.secrets FROM wellhead_ro;
ALTER DEFAULT PRIVILEGES FOR ROLE wellhead_admin IN SCHEMA public, sales, many, archive
    GRANT SELECT ON TABLES TO wellhead_ro;
ALTER ROLE wellhead_ro IN DATABASE :"db" SET default_transaction_read_only = on;

-- A role that can write one table: the startup privilege check must refuse it.
GRANT CONNECT ON DATABASE :"db" TO wellhead_writer;
GRANT USAGE ON SCHEMA public, sales TO wellhead_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public, sales TO wellhead_writer;
GRANT INSERT ON public.orders TO wellhead_writer;

-- Column policies (tests/test_column_policies.py): a table of people with PII columns whose
-- clear values must never come out through a policed source.
SET ROLE wellhead_admin;
CREATE TABLE public.pii_people (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    city    text NOT NULL,
    ssn     text NOT NULL,
    email   text NOT NULL,
    phone   text,
    salary  integer NOT NULL
);
INSERT INTO public.pii_people VALUES
    (1, 'Ada', 'Paris', '123-45-6789', 'ada@example.com', '+33 6 11 22 33 44', 51000),
    (2, 'Bob', 'Lyon', '987-65-4321', 'bob@example.com', '+33 6 55 66 77 88', 62000),
    (3, 'Cyd', 'Paris', '555-12-0000', 'cyd@example.com', NULL, 73000);
CREATE TABLE public.pii_visits (person_id integer NOT NULL, day date NOT NULL);
INSERT INTO public.pii_visits VALUES (1, '2024-01-01'), (1, '2024-01-02'), (2, '2024-01-03');
RESET ROLE;
GRANT SELECT ON public.pii_people, public.pii_visits TO wellhead_ro;

-- Governance (tests/test_governance_roles.py): a login role that only holds membership in
-- per-caller roles (NOINHERIT: none of their grants apply until SET ROLE), and a table with
-- row-level security and a column grant that differ per role.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellhead_gov') THEN
    CREATE ROLE wellhead_gov LOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wh_tenant_a') THEN
    CREATE ROLE wh_tenant_a NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wh_tenant_b') THEN
    CREATE ROLE wh_tenant_b NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wh_gov_writer') THEN
    CREATE ROLE wh_gov_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wh_gov_column_writer') THEN
    CREATE ROLE wh_gov_column_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wh_gov_stranger') THEN
    CREATE ROLE wh_gov_stranger NOLOGIN;
  END IF;
END $$;
ALTER ROLE wellhead_gov PASSWORD :'ro_pw';
ALTER ROLE wellhead_gov IN DATABASE :"db" SET default_transaction_read_only = on;
SET ROLE wellhead_admin;
CREATE SCHEMA gov;
CREATE TABLE gov.tickets (
    id      integer PRIMARY KEY,
    tenant  text NOT NULL,
    title   text NOT NULL,
    internal_note text
);
INSERT INTO gov.tickets VALUES
  (1, 'a', 'printer jam', 'vip'), (2, 'a', 'vpn down', NULL),
  (3, 'b', 'invoice wrong', 'refund'), (4, 'c', 'nobody sees this', NULL);
ALTER TABLE gov.tickets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_a_rows ON gov.tickets FOR SELECT TO wh_tenant_a USING (tenant = 'a');
CREATE POLICY tenant_b_rows ON gov.tickets FOR SELECT TO wh_tenant_b USING (tenant = 'b');
RESET ROLE;
GRANT CONNECT ON DATABASE :"db" TO wellhead_gov;
GRANT USAGE ON SCHEMA gov TO wellhead_gov, wh_tenant_a, wh_tenant_b, wh_gov_writer;
GRANT SELECT ON gov.tickets TO wh_tenant_a;
GRANT SELECT (id, tenant, title) ON gov.tickets TO wh_tenant_b;
GRANT SELECT, INSERT ON gov.tickets TO wh_gov_writer;
GRANT USAGE ON SCHEMA gov TO wh_gov_column_writer;
GRANT SELECT (id), UPDATE (title) ON gov.tickets TO wh_gov_column_writer;  -- a write by column
GRANT USAGE ON SCHEMA public TO wh_tenant_a, wh_tenant_b;
GRANT SELECT ON public.orders TO wh_tenant_a, wh_tenant_b;
GRANT wh_tenant_a, wh_tenant_b, wh_gov_writer, wh_gov_column_writer TO wellhead_gov;
