-- The analyst tables of centflow (DuckDB). The single source of truth with
-- centflow/tables.py, which a test checks column for column.
-- Amounts are DECIMAL(18,6) in the major unit: never a floating type.
-- Times are TIMESTAMPTZ (UTC). Each table is loaded from the Parquet dataset
-- keeping one row per key, so a reload is idempotent.

-- payments: one row per message that became a payment, refund or chargeback.
-- An event_id is here once, except when it came again beyond the
-- de-duplication horizon or for another payee (both copies then settled:
-- recon_event_repeats lists them), so the key is the id and its source.
-- A payment held for review is written when decided (review_outcome 'pending')
-- and again when resolved; the load keeps the resolved row (sinks/duckdb.py).
CREATE TABLE IF NOT EXISTS payments (
    event_id       VARCHAR NOT NULL,
    type           VARCHAR NOT NULL,       -- payment | refund | chargeback
    occurred_at    TIMESTAMPTZ NOT NULL,   -- event time
    ingested_at    TIMESTAMPTZ NOT NULL,   -- ingestion time (Kafka timestamp or log clock)
    payer_id       VARCHAR NOT NULL,
    payee_id       VARCHAR NOT NULL,
    amount         DECIMAL(18,6) NOT NULL,
    currency       VARCHAR NOT NULL,
    rail           VARCHAR NOT NULL,
    country        VARCHAR NOT NULL,
    ref_event_id   VARCHAR,                -- the payment a refund/chargeback reverses
    risk_score     DOUBLE,                 -- a model output in [0, 1], never money
    decision       VARCHAR NOT NULL,       -- approve | review | decline
    model_version  VARCHAR,
    risk_reasons   VARCHAR,                -- ';'-separated
    batch_id       VARCHAR,                -- null until settled
    late           BOOLEAN NOT NULL,       -- joined a later batch as a late adjustment
    device_id      VARCHAR,
    ip             VARCHAR,
    source         VARCHAR NOT NULL,       -- topic/partition/offset or file:line
    review_outcome VARCHAR,                -- decided review: pending | released | declined
    resolved_at    TIMESTAMPTZ,            -- when the review was resolved (centflow review)
    review_note    VARCHAR,                -- the note given with the resolution
    PRIMARY KEY (event_id, source)
);

CREATE TABLE IF NOT EXISTS settlement_batches (
    batch_id             VARCHAR PRIMARY KEY,
    payee_id             VARCHAR NOT NULL,
    currency             VARCHAR NOT NULL,
    window_start         TIMESTAMPTZ NOT NULL,
    window_end           TIMESTAMPTZ NOT NULL,
    part                 BIGINT NOT NULL,   -- > 0 only when a window overflowed DECIMAL(18,6)
    event_count          BIGINT NOT NULL,
    late_count           BIGINT NOT NULL,
    gross                DECIMAL(18,6) NOT NULL,
    refunds              DECIMAL(18,6) NOT NULL,
    fees                 DECIMAL(18,6) NOT NULL,
    net                  DECIMAL(18,6) NOT NULL,
    settlement_currency  VARCHAR NOT NULL,  -- the payee directory's, else currency
    fx_rate              DECIMAL(18,12),    -- the latest event's rate (1 when not converted); null while awaiting_rate
    payout               DECIMAL(18,6) NOT NULL,  -- in settlement_currency, like the carries
    carry_in             DECIMAL(18,6) NOT NULL,
    carry_out            DECIMAL(18,6) NOT NULL,
    closed_at            TIMESTAMPTZ NOT NULL,  -- window end + allowed lateness
    status               VARCHAR NOT NULL DEFAULT 'settled',  -- settled | awaiting_rate | fx_overflow (centflow/money/fx.py)
    fx_converted         DECIMAL(18,6),     -- net converted into settlement_currency (null: no FX)
    fx_spread            DECIMAL(18,6),     -- of it, kept as FX spread revenue (null: no FX)
    settled_at           TIMESTAMPTZ        -- when its payout posted: closed_at, or when the FX rate it awaited came (null while awaiting_rate)
);

-- settlement_fx: per converted batch and rate used, the events' signed amount
-- at that rate (centflow/money/fx.py): trunc(sum(amount * rate) - fees *
-- fx_rate) over a batch's rows recomputes its fx_converted exactly.
CREATE TABLE IF NOT EXISTS settlement_fx (
    batch_id  VARCHAR NOT NULL,
    base      VARCHAR NOT NULL,         -- the events' currency
    quote     VARCHAR NOT NULL,         -- the settlement currency
    rate      DECIMAL(18,12) NOT NULL,  -- quote per base, as given or derived
    as_of     TIMESTAMPTZ NOT NULL,     -- when the rate came into force
    events    BIGINT NOT NULL,
    amount    DECIMAL(18,6) NOT NULL,   -- signed: payments less reversals, in base
    PRIMARY KEY (batch_id, as_of)
);

-- settlement_fees: the fees of each batch, per rail (centflow/money/fees.py):
-- charged once per batch and rail, never per event. fees_if_alone is what the
-- same payments would have been charged had each settled on its own;
-- unpayable_alone counts those whose own fee would exceed their amount.
CREATE TABLE IF NOT EXISTS settlement_fees (
    batch_id          VARCHAR NOT NULL,
    rail              VARCHAR NOT NULL,
    currency          VARCHAR NOT NULL,
    payments          BIGINT NOT NULL,
    gross             DECIMAL(18,6) NOT NULL,  -- the rail's payments in the batch
    fee               DECIMAL(18,6) NOT NULL,  -- fixed + bps, min and cap applied
    chargebacks       BIGINT NOT NULL,
    chargeback_fees   DECIMAL(18,6) NOT NULL,
    rail_cost         DECIMAL(18,6) NOT NULL,  -- what the rail charges the platform
    margin            DECIMAL(18,6) NOT NULL,  -- fee + chargeback_fees - rail_cost
    fees_if_alone     DECIMAL(18,6) NOT NULL,
    unpayable_alone BIGINT NOT NULL,
    PRIMARY KEY (batch_id, rail)
);

-- settlement_payouts: one line per party per batch that pays out; the lines of
-- a batch sum to its payout (a batch that nets to nothing or less has none).
CREATE TABLE IF NOT EXISTS settlement_payouts (
    batch_id  VARCHAR NOT NULL,
    party_id  VARCHAR NOT NULL,  -- the payee, or a revenue-split party
    currency  VARCHAR NOT NULL,  -- the settlement currency
    amount    DECIMAL(18,6) NOT NULL,
    PRIMARY KEY (batch_id, party_id)
);

CREATE TABLE IF NOT EXISTS ledger_entries (
    entry_id   VARCHAR PRIMARY KEY,
    batch_id   VARCHAR NOT NULL,
    event_id   VARCHAR,                  -- null for batch-level postings (payout, carries)
    kind       VARCHAR NOT NULL,         -- payment | refund | chargeback | fee | rail_cost | margin | fx | fx_spread | split | payout | carry_in | carry_out
    account    VARCHAR NOT NULL,
    currency   VARCHAR NOT NULL,
    amount     DECIMAL(18,6) NOT NULL,   -- signed: debit > 0, credit < 0
    posted_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS dead_letters (
    source       VARCHAR PRIMARY KEY,    -- topic/partition/offset or file:line
    reason       VARCHAR NOT NULL,       -- stable code, e.g. invalid_json, duplicate
    detail       VARCHAR NOT NULL,
    raw          BLOB NOT NULL,          -- the message exactly as received
    received_at  TIMESTAMPTZ NOT NULL    -- its ingestion time
);
