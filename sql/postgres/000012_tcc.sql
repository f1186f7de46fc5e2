-- Mailroom schema, version 12: Try-Confirm-Cancel and sagas (the coordinator's durable state)
-- and the participant barrier. See docs/tcc.md and docs/saga.md.

-- One row per global transaction. Every state change is a conditional UPDATE under the row's
-- lock, so a coordinator and a recovery worker that race never both decide: exactly one of
-- "confirm" and "cancel" wins. The lease (owner, lease_until) only keeps a recovery worker from
-- repeating phase calls of a coordinator that is alive; correctness does not depend on it.
CREATE TABLE {{schema}}.tcc_transaction (
  gid text PRIMARY KEY CHECK (octet_length(gid) BETWEEN 1 AND 128),
  kind text NOT NULL CHECK (kind IN ('tcc', 'saga')),
  -- tcc:  trying -> confirming -> confirmed, or trying -> cancelling -> cancelled
  -- saga: running -> succeeded, or running -> compensating -> compensated
  state text NOT NULL CHECK (state IN (
    'trying', 'confirming', 'confirmed', 'cancelling', 'cancelled',
    'running', 'succeeded', 'compensating', 'compensated')),
  -- Past this, a transaction still trying (running) is cancelled (compensated) by recovery.
  timeout_at timestamptz NOT NULL,
  -- Recovery that only knows participants by their stored URL (the CLI) takes only these.
  http_only boolean NOT NULL DEFAULT true,
  owner text,
  lease_until timestamptz,
  -- Phase retries: how many rounds so far, and when the next may start.
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- What the application gave `run(…, { meta })` (an order id…): handed to `onDecision`.
  meta jsonb,
  -- Why it was cancelled (compensated), and the last phase error while retrying.
  reason text,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  decided_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Recovery's work: unfinished transactions, by when they next need attention.
CREATE INDEX tcc_transaction_pending ON {{schema}}.tcc_transaction (next_attempt_at)
  WHERE state IN ('trying', 'confirming', 'cancelling', 'running', 'compensating');
CREATE INDEX tcc_transaction_timeout ON {{schema}}.tcc_transaction (timeout_at)
  WHERE state IN ('trying', 'running');
CREATE INDEX tcc_transaction_finished ON {{schema}}.tcc_transaction (finished_at)
  WHERE finished_at IS NOT NULL;

-- One row per branch (TCC participant, saga step), written before its first call, so recovery
-- knows every branch whose try (action) may have run.
CREATE TABLE {{schema}}.tcc_branch (
  gid text NOT NULL REFERENCES {{schema}}.tcc_transaction (gid) ON DELETE CASCADE,
  branch text NOT NULL CHECK (octet_length(branch) BETWEEN 1 AND 128),
  seq integer NOT NULL,
  -- How to reach it again: {"kind":"http","url":…,"timeoutMs":…} or {"kind":"local"} (found by
  -- branch name among the coordinator's registered participants), or {"kind":"message",…}.
  participant jsonb NOT NULL,
  input jsonb,
  -- tcc:  trying -> tried | refused | unknown, then confirmed or cancelled
  -- saga: running -> done | failed | unknown, then compensated
  state text NOT NULL CHECK (state IN (
    'trying', 'tried', 'refused', 'unknown', 'confirmed', 'cancelled',
    'running', 'done', 'failed', 'compensated')),
  result jsonb,
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (gid, branch)
);

-- The participant's barrier: one row per (global id, branch, phase) that ran, written in the
-- participant's own transaction with its business effects. `reason` is the phase whose call
-- wrote the row: a cancel (compensate) that finds no try (action) writes the try's row with
-- reason 'cancel' ('compensate'), which both records the null compensation and makes a try
-- that arrives later find its row taken and be refused.
CREATE TABLE {{schema}}.tcc_barrier (
  gid text NOT NULL CHECK (octet_length(gid) BETWEEN 1 AND 128),
  branch text NOT NULL CHECK (octet_length(branch) BETWEEN 1 AND 128),
  phase text NOT NULL CHECK (phase IN ('try', 'confirm', 'cancel', 'action', 'compensate')),
  reason text NOT NULL CHECK (reason IN ('try', 'confirm', 'cancel', 'action', 'compensate')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (gid, branch, phase)
);
CREATE INDEX tcc_barrier_created_at ON {{schema}}.tcc_barrier (created_at);
