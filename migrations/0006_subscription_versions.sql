-- The version (last applied event sequence) of each subscription, which the planner records on every decision
-- so the audit trail can say which subscription rules were in force.
ALTER TABLE subscriptions ADD COLUMN version bigint NOT NULL DEFAULT 1;
