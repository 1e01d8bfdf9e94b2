-- Runs at commit for every new transfer and posting: a transfer that does not move the
-- same amount out of its debit account and into its credit account never commits. A transfer
-- is checked once per firing pass of the deferred checks (payments_0001, 0003, 0004).
CREATE OR REPLACE FUNCTION assert_transfer_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
    DECLARE
        checked_id uuid;
        legs bigint;
        total bigint;
        matching bigint;
    BEGIN
        IF TG_TABLE_NAME = 'transfers' THEN
            checked_id := NEW.id;
        ELSE
            checked_id := NEW.transfer_id;
        END IF;
        IF current_setting('payments.last_balanced_transfer', true) = checked_id::text || '@' || statement_timestamp()::text THEN
            RETURN NULL;
        END IF;

        SELECT count(*),
               coalesce(sum(p.amount), 0),
               count(*) FILTER (
                   WHERE (p.account_id = t.debit_account_id AND p.amount = -t.amount)
                      OR (p.account_id = t.credit_account_id AND p.amount = t.amount))
          INTO legs, total, matching
          FROM transfers t JOIN postings p ON p.transfer_id = t.id
         WHERE t.id = checked_id;
        IF legs <> 2 OR total <> 0 OR matching <> 2 THEN
            RAISE EXCEPTION 'transfer % is not balanced (% legs, sum %)', checked_id, legs, total
                USING ERRCODE = 'check_violation';
        END IF;

        PERFORM set_config('payments.last_balanced_transfer', checked_id::text || '@' || statement_timestamp()::text, true);
        RETURN NULL;
    END
    $$;
