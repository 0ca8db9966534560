-- PostgreSQL only. The rows of the fraud_first_known view as of the last change captured, one per fraud
-- transaction: what capture_fraud_changes compares the view with to write the differences to
-- terminal_feature_changes (a transaction's first fraud label can arrive before or after it, and an
-- earlier label can arrive later, moving its known_day).
CREATE TABLE IF NOT EXISTS fraud_first_known_state (
    transaction_id bigint PRIMARY KEY,
    terminal_id text NOT NULL,
    day date NOT NULL,
    known_day date NOT NULL
);
