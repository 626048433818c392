-- 002-subscription-requests.sql - inbound presence subscription requests
-- waiting for the user's answer (RFC 6121 §3.1.3: the server keeps them and
-- delivers them again at each login until the user approves or denies).
-- A request may exist without a roster item (state "None + Pending In").
SET LOCAL ROLE parley_admin;

CREATE TABLE subscription_requests (
    owner text NOT NULL REFERENCES users (jid) ON DELETE CASCADE,
    jid text NOT NULL,
    stanza text NOT NULL,
    stamp timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, jid)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON subscription_requests TO parley_sm;
