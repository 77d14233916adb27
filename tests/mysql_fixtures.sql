-- Fixtures for the MariaDB tests (loaded by .ci/mariadb.sh into database wellhead_test).
-- @RO_PW@ / @WRITER_PW@ / @FILE_PW@ are replaced by the script (test-only passwords).

CREATE TABLE customers (
    customer_id INT PRIMARY KEY,
    name VARCHAR(100) NOT NULL COMMENT 'Full name',
    region VARCHAR(20) NOT NULL,
    signed_up DATE NOT NULL,
    profile JSON NULL
) COMMENT 'One row per customer';

CREATE TABLE products (
    product_id INT PRIMARY KEY,
    title VARCHAR(100) NOT NULL,
    price DECIMAL(10, 2) NOT NULL
);

CREATE TABLE orders (
    order_id INT PRIMARY KEY,
    customer_id INT NOT NULL,
    product_id INT NOT NULL,
    status VARCHAR(10) NOT NULL,
    total DECIMAL(12, 2) NOT NULL,
    ordered_at DATETIME NOT NULL,
    KEY orders_customer (customer_id),
    CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (customer_id),
    CONSTRAINT orders_product_fk FOREIGN KEY (product_id) REFERENCES products (product_id)
) COMMENT 'Orders, generated server-side';

INSERT INTO customers
SELECT seq, CONCAT('customer ', seq), ELT(1 + seq % 4, 'north', 'south', 'east', 'west'),
       DATE '2023-01-01' + INTERVAL (seq % 700) DAY,
       IF(seq % 3 = 0, NULL, JSON_OBJECT('tier', ELT(1 + seq % 3, 'gold', 'silver', 'bronze'),
                                         'tags', JSON_ARRAY('a', seq % 5)))
FROM seq_1_to_1000;

INSERT INTO products
SELECT seq, CONCAT('product ', seq), ROUND(1 + (seq * 37 % 1000) / 10, 2) FROM seq_1_to_100;

-- 1,000,000 orders generated on the server (the Sequence engine), deterministic.
SET SESSION foreign_key_checks = 0;
INSERT INTO orders
SELECT seq, 1 + (seq * 7919) % 1000, 1 + (seq * 31) % 100,
       ELT(1 + (seq * 13) % 4, 'paid', 'shipped', 'refunded', 'open'),
       ROUND(((seq * 104729) % 100000) / 100, 2),
       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (seq * 17) % 31536000 SECOND
FROM seq_1_to_1000000;
SET SESSION foreign_key_checks = 1;
ANALYZE TABLE customers, products, orders;

CREATE VIEW paid_orders AS SELECT order_id, customer_id, total FROM orders WHERE status = 'paid';

-- Case-distinct text values that a case-insensitive collation calls equal (paging ties).
CREATE TABLE words (w VARCHAR(10) NOT NULL) COLLATE utf8mb4_general_ci;
INSERT INTO words VALUES ('a'), ('A'), ('b'), ('B'), ('a'), ('À'), ('c'), ('C');

-- A table only the writer could change (the read-only user may only read it).
CREATE TABLE notes (id INT PRIMARY KEY, body TEXT);
INSERT INTO notes VALUES (1, 'first'), (2, 'second');

-- The least-privilege reader: SELECT on this database and nothing else.
CREATE USER IF NOT EXISTS 'wellhead_ro'@'127.0.0.1';
ALTER USER 'wellhead_ro'@'127.0.0.1' IDENTIFIED BY '@RO_PW@';
GRANT SELECT ON wellhead_test.* TO 'wellhead_ro'@'127.0.0.1';

-- A user that can write (the start-up check must refuse it).
CREATE USER IF NOT EXISTS 'wellhead_writer'@'127.0.0.1';
ALTER USER 'wellhead_writer'@'127.0.0.1' IDENTIFIED BY '@WRITER_PW@';
GRANT SELECT, INSERT, UPDATE ON wellhead_test.* TO 'wellhead_writer'@'127.0.0.1';

-- A reader with FILE and PROCESS (refused too: LOAD_FILE, INTO OUTFILE, other sessions).
CREATE USER IF NOT EXISTS 'wellhead_file'@'127.0.0.1';
ALTER USER 'wellhead_file'@'127.0.0.1' IDENTIFIED BY '@FILE_PW@';
GRANT SELECT ON wellhead_test.* TO 'wellhead_file'@'127.0.0.1';
GRANT FILE, PROCESS ON *.* TO 'wellhead_file'@'127.0.0.1';

-- 5,000 tables in their own database: discovery must stay fast (tests/test_source_mysql.py,
-- bench/bench_mysql.py). Created by a procedure dropped right after.
DROP DATABASE IF EXISTS wellhead_many;
CREATE DATABASE wellhead_many;
DELIMITER //
CREATE PROCEDURE wellhead_many.make_tables(n INT)
BEGIN
  DECLARE i INT DEFAULT 1;
  WHILE i <= n DO
    SET @ddl = CONCAT('CREATE TABLE wellhead_many.t', LPAD(i, 4, '0'),
                      ' (id INT PRIMARY KEY, v VARCHAR(20)) COMMENT ''table ', i, '''');
    PREPARE s FROM @ddl;
    EXECUTE s;
    DEALLOCATE PREPARE s;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
CALL wellhead_many.make_tables(5000);
DROP PROCEDURE wellhead_many.make_tables;
GRANT SELECT ON wellhead_many.* TO 'wellhead_ro'@'127.0.0.1';
