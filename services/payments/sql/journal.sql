-- The journal row, its two postings and its transfer.posted event; only post_transfer calls it
-- (payments_0002, with the payment request and bank notification since payments_0006).
CREATE OR REPLACE FUNCTION journal(
    p_transfer uuid, p_kind text, p_amount bigint, p_debit uuid, p_credit uuid,
    p_wallet uuid, p_source text, p_lot text, p_original uuid, p_hold uuid,
    p_payment_request uuid, p_bank_notification uuid,
    p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea
) RETURNS timestamptz LANGUAGE plpgsql AS $$
    DECLARE
        posted timestamptz;
    BEGIN
        INSERT INTO transfers (id, kind, amount, debit_account_id, credit_account_id,
                               wallet_account_id, source, lot_id, original_transfer_id, hold_id,
                               payment_request_id, bank_notification_id)
        VALUES (p_transfer, p_kind, p_amount, p_debit, p_credit, p_wallet, p_source, p_lot,
                p_original, p_hold, p_payment_request, p_bank_notification)
        RETURNING posted_at INTO posted;
        INSERT INTO postings (transfer_id, account_id, amount)
        VALUES (p_transfer, p_debit, -p_amount), (p_transfer, p_credit, p_amount);
        INSERT INTO outbox (event_id, topic, key, headers, payload)
        VALUES (p_event, p_topic, p_event_key, p_headers, p_payload);
        RETURN posted;
    END
    $$;
