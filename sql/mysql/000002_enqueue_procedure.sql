-- Mailroom schema for MySQL / MariaDB, version 2: the SQL API. Triggers, other languages and
-- the mysql client enqueue a message inside their own transaction with
--
--   CALL mailroom_enqueue('order.created', JSON_OBJECT('id', 42), 'order-42', NULL, NULL, 0, @id);
--   SELECT @id;  -- the message id, a UUIDv7
--
-- Arguments: topic, payload (JSON), key (or NULL), headers (a JSON object of strings, or NULL),
-- type (or NULL), delay in milliseconds (0 or NULL: due now), and an OUT variable for the id.
-- The same checks as the TypeScript enqueue, with the same limits; a bad argument is SQLSTATE
-- 22023 with a message that names it, and nothing is written.
--
-- A procedure, not a function: a function that writes cannot be created on a server with binary
-- logging (MySQL 8's default) unless log_bin_trust_function_creators is on. A trigger calls it
-- with a local variable for the id (DECLARE v CHAR(36); CALL mailroom_enqueue(…, v);).
--
-- The payload is stored as JSON text: MySQL 8 stores it as it prints the JSON value (keys
-- sorted, normalised spacing); MariaDB, whose JSON is text, as written. `SET
-- @mailroom_max_payload_bytes = 4194304` raises the payload limit (1 MiB) for a session, as
-- `Outbox({ maxPayloadBytes })` does for the TypeScript side.

DROP PROCEDURE IF EXISTS {{enqueue}};

DELIMITER $$
CREATE PROCEDURE {{enqueue}}(
  IN p_topic TEXT CHARACTER SET utf8mb4,
  IN p_payload JSON,
  IN p_key TEXT CHARACTER SET utf8mb4,
  IN p_headers JSON,
  IN p_type TEXT CHARACTER SET utf8mb4,
  IN p_delay_ms BIGINT,
  OUT p_id CHAR(36) CHARACTER SET ascii
)
MODIFIES SQL DATA
BEGIN
  DECLARE v_body LONGBLOB;
  DECLARE v_headers JSON;
  DECLARE v_values JSON;
  DECLARE v_i INT DEFAULT 0;
  DECLARE v_limit BIGINT DEFAULT 1048576;
  DECLARE v_ms BIGINT;
  DECLARE v_hex CHAR(12);
  DECLARE v_rand CHAR(64);
  DECLARE v_msg VARCHAR(128);

  IF p_topic IS NULL OR OCTET_LENGTH(p_topic) = 0 OR OCTET_LENGTH(p_topic) > 255 THEN
    SET v_msg = CONCAT('mailroom_enqueue: topic must be 1 to 255 bytes, got ',
                       COALESCE(OCTET_LENGTH(p_topic), 'NULL'), IF(p_topic IS NULL, '', ' bytes'));
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;
  IF p_topic REGEXP '[[:cntrl:]]' THEN
    SET v_msg = CONCAT('mailroom_enqueue: topic ', QUOTE(LEFT(p_topic, 60)), ' contains a control character');
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;
  IF p_key IS NOT NULL AND (OCTET_LENGTH(p_key) = 0 OR OCTET_LENGTH(p_key) > 1024) THEN
    SET v_msg = CONCAT('mailroom_enqueue: key must be 1 to 1024 bytes, got ', OCTET_LENGTH(p_key));
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;
  IF p_type IS NOT NULL AND (OCTET_LENGTH(p_type) = 0 OR OCTET_LENGTH(p_type) > 255) THEN
    SET v_msg = CONCAT('mailroom_enqueue: type must be 1 to 255 bytes, got ', OCTET_LENGTH(p_type));
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;

  -- MariaDB's JSON is text and does not check a parameter: check here, on both servers.
  IF p_payload IS NOT NULL AND NOT JSON_VALID(p_payload) THEN
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = 'mailroom_enqueue: payload is not valid JSON';
  END IF;
  IF p_headers IS NOT NULL AND NOT JSON_VALID(p_headers) THEN
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = 'mailroom_enqueue: headers is not valid JSON';
  END IF;
  SET v_headers = COALESCE(p_headers, JSON_OBJECT());
  IF JSON_TYPE(v_headers) <> 'OBJECT' THEN
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = 'mailroom_enqueue: headers must be a JSON object of strings';
  END IF;
  IF JSON_LENGTH(v_headers) > 0 THEN
    SET v_values = JSON_EXTRACT(v_headers, '$.*');
    WHILE v_i < JSON_LENGTH(v_values) DO
      IF JSON_TYPE(JSON_EXTRACT(v_values, CONCAT('$[', v_i, ']'))) <> 'STRING' THEN
        SIGNAL SQLSTATE '22023'
          SET MESSAGE_TEXT = 'mailroom_enqueue: every header value must be a JSON string';
      END IF;
      SET v_i = v_i + 1;
    END WHILE;
  END IF;
  IF OCTET_LENGTH(CAST(v_headers AS CHAR)) > 65536 THEN
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = 'mailroom_enqueue: headers are over the limit of 65536 bytes';
  END IF;

  IF p_delay_ms < 0 OR p_delay_ms > 31536000000 THEN
    SET v_msg = CONCAT('mailroom_enqueue: delay must be 0 to 31536000000 ms (365 days), got ', p_delay_ms);
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;

  -- The limit from the session's @mailroom_max_payload_bytes, checked as text first so that a
  -- bad value names the variable instead of failing as a cast.
  IF @mailroom_max_payload_bytes IS NOT NULL THEN
    IF CAST(@mailroom_max_payload_bytes AS CHAR) NOT REGEXP '^[0-9]{1,15}$'
       OR CAST(@mailroom_max_payload_bytes AS UNSIGNED) < 1 THEN
      SIGNAL SQLSTATE '22023'
        SET MESSAGE_TEXT = 'mailroom_enqueue: @mailroom_max_payload_bytes must be a whole number of bytes, at least 1';
    END IF;
    SET v_limit = CAST(@mailroom_max_payload_bytes AS UNSIGNED);
  END IF;
  SET v_body = CONVERT(COALESCE(CAST(p_payload AS CHAR), 'null') USING utf8mb4);
  IF OCTET_LENGTH(v_body) > v_limit THEN
    SET v_msg = CONCAT('mailroom_enqueue: payload is ', OCTET_LENGTH(v_body), ' bytes, over the limit of ', v_limit);
    SIGNAL SQLSTATE '22023' SET MESSAGE_TEXT = v_msg;
  END IF;

  -- UUIDv7 (RFC 9562): 48 bits of Unix milliseconds from the database clock, version 7, the
  -- variant, then bits from a hash of UUID() (unique per call) and RAND().
  SET v_ms = TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000;
  SET v_hex = LPAD(LOWER(HEX(v_ms)), 12, '0');
  SET v_rand = SHA2(CONCAT(UUID(), '/', RAND(), '/', CONNECTION_ID()), 256);
  SET p_id = CONCAT(SUBSTR(v_hex, 1, 8), '-', SUBSTR(v_hex, 9, 4), '-7', SUBSTR(v_rand, 1, 3), '-',
                    SUBSTR('89ab', 1 + (CONV(SUBSTR(v_rand, 4, 1), 16, 10) % 4), 1), SUBSTR(v_rand, 5, 3), '-',
                    SUBSTR(v_rand, 8, 12));

  INSERT INTO {{outbox}} (id, topic, msg_key, type, payload, content_type, headers, created_at, available_at)
  VALUES (p_id, p_topic, CAST(CONVERT(p_key USING utf8mb4) AS BINARY), p_type, v_body, 'application/json',
          v_headers, UTC_TIMESTAMP(6),
          UTC_TIMESTAMP(6) + INTERVAL (COALESCE(p_delay_ms, 0) * 1000) MICROSECOND);
END$$
DELIMITER ;
