-- The table `leadscore warehouse import` polls in compose: the data team's latest external
-- score per user. Update a row (with a later updated_at) and the scorer receives it.
CREATE TABLE IF NOT EXISTS lead_score_imports (
    user_id text PRIMARY KEY,
    score integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO lead_score_imports (user_id, score) VALUES ('warehouse-lead-1', 42)
ON CONFLICT DO NOTHING;
