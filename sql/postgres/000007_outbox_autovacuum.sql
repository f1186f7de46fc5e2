-- Mailroom schema, version 7: vacuum settings for a queue table.
--
-- Every message leaves two dead row versions in the outbox (the claim's lease update, then the
-- delete or the move to the dead letters), and every claim reads from the oldest rows, where
-- those dead versions pile up until a vacuum removes them: the claim slows down as they grow.
-- PostgreSQL's defaults suit tables that are mostly read. For the outbox:
--
-- - vacuum after a fixed number of dead rows, not a share of the table: a drained outbox has few
--   live rows, so the default 20 % + 50 is "almost always" or "never", depending on the moment;
-- - run that vacuum unthrottled (cost delay 0): the table is small between bursts, and a
--   throttled vacuum of a few hundred thousand dead rows takes longer than the next batch of them
--   takes to appear;
-- - ANALYZE on the same terms, so the planner knows the backlog's real size.
--
-- How often autovacuum looks at all is autovacuum_naptime, a server setting (1 min by default):
-- see docs/stores/postgres.md, "Vacuum", for a rate above a few thousand messages per second.

ALTER TABLE {{schema}}.outbox SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 50000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 10000,
  autovacuum_vacuum_cost_delay = 0
);
