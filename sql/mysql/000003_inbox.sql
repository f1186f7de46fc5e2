-- Mailroom schema for MySQL / MariaDB, version 3: the inbox (the receiving side, docs/inbox.md):
-- which messages each receiving service (consumer) has processed, written in the handler's own
-- transaction so that a message's effects and its record commit together.

CREATE TABLE IF NOT EXISTS {{inbox}} (
  consumer VARCHAR(255) NOT NULL,
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  processed_at DATETIME(6) NOT NULL,
  PRIMARY KEY (consumer, id),
  -- Retention deletes a consumer's oldest records first.
  KEY inbox_processed_at (consumer, processed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Records (consumer, id) and answers with one row when the record is new, none when it was there
-- (a duplicate). MySQL has no INSERT … RETURNING (MariaDB has), and INSERT IGNORE would turn
-- every other error (a consumer name too long) into a warning, so the duplicate key error 1062
-- is caught here and nothing else. A second transaction recording the same pair waits on the
-- primary key for the first one's outcome: it inserts (the first rolled back) or gets 1062 (the
-- first committed).
DROP PROCEDURE IF EXISTS {{inbox_record}};

DELIMITER $$
CREATE PROCEDURE {{inbox_record}}(IN p_consumer VARCHAR(255) CHARACTER SET utf8mb4, IN p_id CHAR(36) CHARACTER SET ascii)
MODIFIES SQL DATA
BEGIN
  DECLARE v_duplicate INT DEFAULT 0;
  DECLARE CONTINUE HANDLER FOR 1062 SET v_duplicate = 1;
  INSERT INTO {{inbox}} (consumer, id, processed_at) VALUES (p_consumer, p_id, UTC_TIMESTAMP(6));
  SELECT 1 AS new FROM DUAL WHERE v_duplicate = 0;
END$$
DELIMITER ;
