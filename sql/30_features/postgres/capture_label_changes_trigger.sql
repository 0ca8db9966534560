-- PostgreSQL only. Runs capture_label_changes once per insert statement, with the inserted rows.
CREATE OR REPLACE TRIGGER capture_label_changes_trigger
    AFTER INSERT ON labels_src
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION capture_label_changes();
