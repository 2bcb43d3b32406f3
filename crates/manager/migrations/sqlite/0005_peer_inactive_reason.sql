-- Why and since when a peer is inactive (its session ended, the manager restarted); empty
-- while it is active.
ALTER TABLE peers ADD COLUMN inactive_reason TEXT NOT NULL DEFAULT '';
