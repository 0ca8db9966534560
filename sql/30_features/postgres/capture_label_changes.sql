-- PostgreSQL only. After each insert into labels_src: re-capture the frauds of the transactions that got a
-- fraud label (a label saying genuine changes nothing: fraud_first_known reads fraud labels only).
CREATE OR REPLACE FUNCTION capture_label_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM capture_fraud_changes(ARRAY(
        SELECT DISTINCT (data->>'transaction_id')::bigint FROM new_rows WHERE (data->>'is_fraud')::boolean
    ));
    RETURN NULL;
END
$$;
