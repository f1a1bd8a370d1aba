-- Expand. Outgoing webhooks (src/outgoing_webhooks/): the endpoints an
-- admin registers and one delivery per endpoint and event. New tables: the
-- previous release neither reads nor writes them, and this one works with
-- them empty.
--
-- * events: what the endpoint asked for, checked against the events the
--   service knows, so that a typo can never make an endpoint that silently
--   receives nothing.
-- * secret: the signing secret (`whsec_` and base64), kept because every
--   call is signed with it; shown to the admin once, when it is made.
-- * failing_since: the first failure of the current run of failures, NULL
--   while the endpoint answers; an endpoint failing for longer than the
--   configured time is disabled, with its reason.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    events text[] NOT NULL,
    secret text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_at timestamptz NULL,
    disabled_reason text NULL,
    failing_since timestamptz NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_url_length CHECK (char_length(url) BETWEEN 1 AND 2000),
    CONSTRAINT webhook_endpoints_description_length CHECK (char_length(description) <= 200),
    CONSTRAINT webhook_endpoints_events_known CHECK (
        cardinality(events) > 0
        AND events <@ ARRAY[
            'subscriber.created', 'subscriber.confirmed', 'subscriber.unsubscribed',
            'subscriber.bounced', 'subscriber.complained', 'subscriber.erased',
            'issue.published', 'issue.finished'
        ]::text[]
    )
);

-- One row per endpoint and event. `event_id` is the `webhook-id` header:
-- the same for every attempt and for every endpoint of one event, so that
-- a receiver can drop what it saw before (delivery is at least once).
--
-- * subscriber_id: whom a subscriber event is about, so that erasure finds
--   the payloads that hold their address without reading the table whole.
-- * claim_id / leased_until: the worker that holds the row, and until when;
--   every write of an outcome names its claim, so a worker whose lease
--   lapsed and was taken over cannot overwrite the newer outcome.
-- * last_error: a fixed text the service wrote (a refused address, a
--   status code, a timeout), never the receiver's words.
CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    subscriber_id uuid NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Never more than the retry schedule's length.
    -- squawk-ignore prefer-bigint-over-int
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_id uuid NULL,
    leased_until timestamptz NULL,
    status text NOT NULL DEFAULT 'pending',
    last_attempt_at timestamptz NULL,
    -- An HTTP status.
    -- squawk-ignore prefer-bigint-over-int
    last_code integer NULL,
    last_error text NULL,
    delivered_at timestamptz NULL,
    CONSTRAINT webhook_deliveries_status_known
        CHECK (status IN ('pending', 'delivered', 'failed')),
    CONSTRAINT webhook_deliveries_once_per_endpoint UNIQUE (endpoint_id, event_id)
);

-- What the workers claim: due and pending, oldest first.
CREATE INDEX webhook_deliveries_due_idx
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- An endpoint's page: its recent deliveries.
CREATE INDEX webhook_deliveries_endpoint_idx
    ON webhook_deliveries (endpoint_id, created_at DESC);
-- Erasure: the payloads about one subscriber.
CREATE INDEX webhook_deliveries_subscriber_idx
    ON webhook_deliveries (subscriber_id) WHERE subscriber_id IS NOT NULL;
-- Retention: delivered and failed rows, in the order they finished.
CREATE INDEX webhook_deliveries_finished_idx
    ON webhook_deliveries (last_attempt_at, id) WHERE status <> 'pending';
