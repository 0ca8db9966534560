-- PostgreSQL only. Runs capture_transaction_changes once per insert statement, with the inserted rows.
CREATE OR REPLACE TRIGGER capture_transaction_changes_trigger
    AFTER INSERT ON transactions_src
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION capture_transaction_changes();
